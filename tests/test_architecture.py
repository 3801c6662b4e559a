"""The package's layering, checked statically with `ast` on the files under src/tbd.

Each module sits on a layer and may import only from its own layer or below, so the core never
pulls in the CLI, the harness never reaches into reports, and so on. Framework-specific code lives
only in plugins (tbd.frameworks and the framework workload modules); everything else must not branch
on framework names. Nothing here imports tbd, so a broken import cannot hide a violation.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tbd"

# Workload modules that hold framework-specific code: the last name component ends with `_impl`
# (tbd.workloads.resnet50.torch_impl) or with a framework suffix (tbd.workloads.image_torch).
FRAMEWORK_WORKLOAD = "<framework-specific tbd.workloads module>"
FRAMEWORK_SUFFIXES = ("_impl", "_torch", "_jax", "_tf", "_mxnet")

# Rule -> layer; the first rule that matches a module wins. "x.*" means x and everything below it,
# a plain name means that module only.
LAYER_TABLE: list[tuple[str, int]] = [
    # 2 frameworks (listed first: it carves an exception out of tbd.workloads.* below).
    (FRAMEWORK_WORKLOAD, 2),
    # 0 base: errors, metric primitives and the version; they import nothing else of tbd.
    ("tbd.errors", 0),
    ("tbd.metrics.*", 0),
    ("tbd.version", 0),
    # 1 model: configuration, topology, the registry, result records, framework-free workload specs and dataset readers.
    ("tbd.config", 1),
    ("tbd.topology", 1),
    ("tbd.registry", 1),
    ("tbd.results.*", 1),
    ("tbd.workloads.*", 1),
    ("tbd.data.*", 1),
    # 2 frameworks: the framework adapters (framework workload modules: first rule above).
    ("tbd.frameworks.*", 2),
    # 3 harness: runs and measures a workload through a framework adapter.
    ("tbd.harness.*", 3),
    # 4 tools: analysis, memory profiling, reports and sweeps built on top of the harness.
    ("tbd.analysis.*", 4),
    ("tbd.memory.*", 4),
    ("tbd.report.*", 4),
    ("tbd.sweep.*", 4),
    # 5 entry: the CLI and the public API; the top package counts here because its __init__ will
    # hold the public API, so `from tbd import __version__` below layer 5 is an upward import.
    ("tbd.commands.*", 5),
    ("tbd.cli", 5),
    ("tbd.api", 5),
    ("tbd.__main__", 5),
    ("tbd", 5),
]


def is_framework_workload(module: str) -> bool:
    """A tbd.workloads module whose own name marks it as framework-specific."""
    return module.startswith("tbd.workloads.") and module.rsplit(".", 1)[-1].endswith(FRAMEWORK_SUFFIXES)


def _rule_matches(rule: str, module: str) -> bool:
    if rule == FRAMEWORK_WORKLOAD:
        return is_framework_workload(module)
    if rule.endswith(".*"):
        package = rule[:-2]
        return module == package or module.startswith(package + ".")
    return module == rule


def layer_of(module: str) -> int | None:
    return next((layer for rule, layer in LAYER_TABLE if _rule_matches(rule, module)), None)


# --- the import walker --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Import:
    importer: str
    line: int
    target: str


def module_name(path: Path, src_root: Path) -> str:
    """src/tbd/x/y.py -> tbd.x.y; src/tbd/x/__init__.py -> tbd.x (src_root is the `tbd` folder)."""
    parts = list(path.relative_to(src_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(src_root: Path) -> dict[str, Path]:
    return {module_name(p, src_root): p for p in sorted(src_root.rglob("*.py"))}


def _resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a `from ... import` names, relative imports resolved against the importer."""
    if node.level == 0:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, importer: str, modules: set[str]) -> list[Import]:
    """Every tbd import in a file, at any depth (functions, classes, if-blocks included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, importer, path.name == "__init__.py")
            # `from tbd.x import y` imports the module tbd.x.y when there is one, else a name of tbd.x.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found += [Import(importer, node.lineno, t) for t in targets if t == "tbd" or t.startswith("tbd.")]
    return found


def all_imports(src_root: Path) -> list[Import]:
    modules = source_modules(src_root)
    return sorted(imp for name, path in modules.items() for imp in imports_of(path, name, set(modules)))


def layering_problems(src_root: Path) -> list[str]:
    """Unassigned modules, then every upward import as `importer:line -> target (layer a -> layer b)`."""
    imports = all_imports(src_root)
    names = sorted(set(source_modules(src_root)) | {imp.target for imp in imports})
    problems = [f"unassigned module {name}: add it to the layer table" for name in names if layer_of(name) is None]
    for imp in imports:
        a, b = layer_of(imp.importer), layer_of(imp.target)
        if a is not None and b is not None and b > a:
            problems.append(f"{imp.importer}:{imp.line} -> {imp.target} (layer {a} -> layer {b})")
    return problems


def test_imports_point_down_the_layers():
    problems = layering_problems(SRC)
    assert not problems, f"{len(problems)} layering problem(s):\n" + "\n".join(problems)


def test_import_walker_on_a_synthetic_tree(tmp_path):
    pkg = tmp_path / "tbd"
    for folder in ("metrics", "harness", "commands"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "commands" / "run.py").write_text("X = 1\n")
    (pkg / "metrics" / "peaks.py").write_text(
        "import os\n"
        "def f():\n"
        "    from tbd.commands import run\n"  # line 3: upward, hidden inside a function
    )
    (pkg / "harness" / "measure.py").write_text(
        "from ..metrics import peaks\n"  # relative, resolves to the module tbd.metrics.peaks
        "from . import nothing_here\n"  # a name, not a module: resolves to the package tbd.harness
        "if True:\n"
        "    from tbd import __version__\n"  # line 4: the top package is layer 5
    )
    assert all_imports(tmp_path / "tbd") == [
        Import("tbd.harness.measure", 1, "tbd.metrics.peaks"),
        Import("tbd.harness.measure", 2, "tbd.harness"),
        Import("tbd.harness.measure", 4, "tbd"),
        Import("tbd.metrics.peaks", 3, "tbd.commands.run"),
    ]
    assert layering_problems(tmp_path / "tbd") == [
        "tbd.harness.measure:4 -> tbd (layer 3 -> layer 5)",
        "tbd.metrics.peaks:3 -> tbd.commands.run (layer 0 -> layer 5)",
    ]
    (pkg / "gadgets.py").write_text("")
    assert layering_problems(tmp_path / "tbd")[0] == "unassigned module tbd.gadgets: add it to the layer table"


def test_layer_table():
    assert layer_of("tbd.workloads.resnet50.torch_impl") == 2
    assert layer_of("tbd.workloads.image_torch") == 2
    assert layer_of("tbd.workloads.resnet50.spec") == 1
    assert layer_of("tbd.workloads.text_data") == 1
    assert layer_of("tbd.metrics.peaks") == 0
    assert layer_of("tbd") == 5
    assert layer_of("tbd.metricsx") is None


# --- framework branches -------------------------------------------------------------------------

FRAMEWORK_NAMES = {"torch", "jax", "tf", "tensorflow", "mxnet"}


def _is_framework_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FRAMEWORK_NAMES


def _framework_names_in(node: ast.AST) -> int:
    """How many framework-name constants a tuple/list/set literal holds (0 for anything else)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return sum(map(_is_framework_name, node.elts))
    return 0


def framework_branches(source: str) -> list[tuple[int, str]]:
    """(line, source segment) of each place the code branches on or tabulates framework names:
    a comparison with a framework name (`fw == "torch"`, `fw in ("torch", "jax")`), a dict keyed by
    two or more framework names, or a module-level tuple/list/set of two or more of them.
    Plain strings (help texts, f-string text, default arguments) are not comparisons, so they pass."""
    tree = ast.parse(source)
    hits: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            in_literal = any(
                isinstance(op, (ast.In, ast.NotIn)) and _framework_names_in(right)
                for op, right in zip(node.ops, node.comparators)
            )
            if in_literal or any(map(_is_framework_name, operands)):
                hits.append(node)
        elif isinstance(node, ast.Dict) and sum(map(_is_framework_name, filter(None, node.keys))) >= 2:
            hits.append(node)
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            if _framework_names_in(stmt.value) >= 2:
                hits.append(stmt)
    found = set()
    for node in hits:
        segment = re.sub(r"\s+", " ", ast.get_source_segment(source, node) or "")
        found.add((node.lineno, segment if len(segment) <= 120 else segment[:117] + "..."))
    return sorted(found)


# The one place frameworks are registered: name -> plugin package (tbd.registry.FRAMEWORKS).
REGISTRATION = {("src/tbd/registry.py", "FRAMEWORKS")}


def test_no_framework_branches_outside_plugins():
    root = SRC.parent.parent
    problems = []
    for name, path in source_modules(SRC).items():
        if name == "tbd.frameworks" or name.startswith("tbd.frameworks.") or is_framework_workload(name):
            continue
        rel = path.relative_to(root)
        text = path.read_text()
        registered = {line for file, table in REGISTRATION if str(rel) == file for line in _assignment_lines(text, table)}
        problems += [f"{rel}:{line}: {segment}" for line, segment in framework_branches(text) if line not in registered]
    assert not problems, f"{len(problems)} framework branch(es) outside the plugins:\n" + "\n".join(problems)


def _assignment_lines(text: str, target: str) -> set[int]:
    """Line numbers of the module-level assignment to `target` (its value may span lines)."""
    lines: set[int] = set()
    for node in ast.parse(text).body:
        names = [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
        if target in names:
            lines |= set(range(node.lineno, node.end_lineno + 1))
    return lines


def test_framework_branch_detector():
    positives = {
        "compare": 'if fw == "torch":\n    pass\n',
        "compare, name on the left": 'ok = "jax" != fw\n',
        "in a literal": 'if fw in ("jax", "other"):\n    pass\n',
        "not in a literal": 'if fw not in ["mxnet"]:\n    pass\n',
        "dict keyed by framework": 'ADAPTERS = {"torch": 1, "jax": 2}\n',
        "module-level list": 'SUPPORTED = ["torch", "tensorflow"]\n',
        "module-level annotated tuple": 'SUPPORTED: tuple = ("tf", "jax")\n',
    }
    for what, snippet in positives.items():
        assert framework_branches(snippet), what
    assert framework_branches('x = 1\nif fw == "torch":\n    pass\n') == [(2, 'fw == "torch"')]

    negatives = {
        "help text": 'p.add_argument("--framework", help="torch or jax, default torch")\n',
        "bare framework help": 'p.add_argument("--framework", help="torch")\n',
        "f-string": 'msg = f"running on torch with {n} GPUs"\n',
        "default argument": 'def run(framework: str = "torch"):\n    return framework\n',
        "dict with one framework key": 'DEFAULTS = {"torch": 1, "batch": 2}\n',
        "list inside a function": 'def f():\n    return ["torch", "jax"]\n',
        "other strings compared": 'if device == "cuda":\n    pass\n',
    }
    for what, snippet in negatives.items():
        assert framework_branches(snippet) == [], what
