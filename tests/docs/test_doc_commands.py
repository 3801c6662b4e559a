"""Every command line of README.md and docs/**/*.md is checked here, on the CPU, so the examples
cannot rot (issue 15). tests/docs/doc_commands.py finds and classifies them; the conventions for
writing docs are in docs/architecture.md, "Commands in the docs". `python -m tests.docs.doc_commands`
lists every command with its kind.

- run: executed through `tbd.cli.main` in this process, against a copy of one prepared results
  store (STORE_SETUP) from a work folder that holds the files the docs name, and made short in
  a visible way (`as_run`: a 3-step budget, in-process runs, sweeps over gpt/torch after a
  `--dry-run` of the whole sweep as written). Expected: exit 0 (EXPECTED_EXIT lists the commands
  the docs show failing on purpose), no traceback, no failed run stored. A command the store
  setup already ran is not run again: its outcome then is checked. A command of a framework not
  installed here must fail with one line naming the `pip install`. Commands that train are `slow`.
- gpu: run as written without a GPU: exit 2, one line `tbd: error: ...` naming the GPU (or
  Nsight Compute), nothing stored. Skipped where a GPU is present.
- synopsis, mention: the command, and each option the line names, exist in tbd's parser.
- static: a bench script exists and declares each option the line gives; a make target, a pip
  extra, a pytest path exist.
- not-run: a `[not run: REASON]` tag; the reason is required.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tbd import cli, registry
from tbd.metrics.devices import cuda_available
from tests.docs.doc_commands import ROOT, DocCommand, classify, find_commands, is_synopsis, needs_cuda, subcommands

# --- how a documented command is made short enough for a test (visible in each test's failure) ---
BUDGET = ("--max-steps", "3", "--max-time", "1")  # step 0 plus two timed steps: every part of a run, in seconds
# The commands that measure, each with what replaces its own budget (argparse keeps the last of a flag).
MEASURING = {
    "run": BUDGET,
    "scale": BUDGET,
    "sweep": BUDGET,
    "data bench": ("--batches", "3", "--warmup", "1"),  # the loader alone: one warm-up batch, three timed
}
IN_PROCESS = ("run", "scale", "sweep")  # these also get --in-process
# Commands that write a dataset, with the size that replaces theirs: the store setup makes ./imgs so,
# and `tbd data make resnet50 --out ./imgs` in the docs is then that outcome.
SMALL_DATA = {"data make": ("--size", "16")}
SWEEP_SCOPE = ("--workloads", "gpt", "--frameworks", "torch")  # one point of the cheapest workload, after a --dry-run of all


def command_name(argv: list[str]) -> str:
    """'run', or 'data bench' for a command of a group."""
    return " ".join(argv[:2]) if " ".join(argv[:2]) in (*MEASURING, *SMALL_DATA) else argv[0]


def as_run(argv: list[str]) -> list[str]:
    """The command line the test executes for the documented `tbd ARGV`: the documented budget
    (or size) replaced by the one above, the sweep scope and --in-process appended."""
    name = command_name(argv)
    budget = MEASURING.get(name) or SMALL_DATA.get(name)
    if budget is None:
        return list(argv)
    kept = [w for i, w in enumerate(argv) if not _is_replaced(argv, i, budget[::2])]
    extra = [*(SWEEP_SCOPE if name == "sweep" else ()), *budget]
    if name in IN_PROCESS and "--nproc-per-node" not in argv:  # several ranks go through torchrun whatever the flag
        extra.append("--in-process")
    return [*kept, *extra]


def _is_replaced(argv: list[str], i: int, flags: tuple[str, ...]) -> bool:
    """Whether argv[i] is one of the flags as_run replaces, or its value."""
    return argv[i].split("=")[0] in flags or (i > 0 and argv[i - 1] in flags)


# Commands the docs show failing on purpose: (exit code, what the one line says).
EXPECTED_EXIT: dict[str, tuple[int, str]] = {}

# The store every `run` command starts from (each test gets its own copy), and the files of the
# work folder: what the documented commands name (sweeps, a baseline, `latest`, nightly.toml).
NIGHTLY_TOML = '# the nightly recipe of docs/sweeps.md, made small\nworkloads = ["gpt"]\nframeworks = ["torch"]\n'
STORE_SETUP = (
    ("sweep", "--file", "nightly.toml", "--name", "nightly"),  # docs/sweeps.md: the nightly recipe
    ("compare", "--save-baseline", "baseline.json", "nightly"),
    ("sweep", "--file", "nightly.toml", "--name", "nightly-new"),
    ("sweep", "--preset", "quick"),  # for `tbd report quick`
    ("sweep", "--name", "old-sweep"),  # for `tbd compare old-sweep new-sweep`
    ("sweep", "--name", "new-sweep"),
    ("data", "make", "resnet50", "--out", "./imgs"),  # docs/data.md: `--data ./imgs`
    ("run", "gpt", "--profile"),  # last: `latest` is a profiled run, as after the README's `tbd run gpt --profile`
)
REPO_FOLDERS = ("tests",)  # linked into the work folder: `tbd run tests/plugins/my_workloads.py:TinyMLP`
# The environment of every command: a wide table, and one intra-op thread per run (tbd honours
# OMP_NUM_THREADS): tiny steps gain nothing from a second thread, and on a busy machine OpenMP's
# spinning threads make a resnet50 tiny step 20x slower.
ENVIRONMENT = {"COLUMNS": "160", "OMP_NUM_THREADS": "1"}


@dataclass
class Outcome:
    argv: list[str]
    code: int
    out: str
    err: str
    new_runs: list[dict]

    def __str__(self) -> str:
        return f"tbd {' '.join(self.argv)} -> exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def run_ids(home: Path) -> set[str]:
    return {p.stem for p in (home / "runs").glob("*.json")} if (home / "runs").is_dir() else set()


def tbd(argv: list[str], home: Path) -> Outcome:
    """`tbd ARGV` in this process, as `python -m tbd.cli` would run it; the runs it stored."""
    before = run_ids(home)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version, bad usage
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    new = [json.loads((home / "runs" / f"{i}.json").read_text()) for i in sorted(run_ids(home) - before)]
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), new)


@dataclass
class Prepared:
    home: Path
    work: Path
    outcomes: dict[tuple[str, ...], Outcome]  # the setup's commands, by the argv executed


@pytest.fixture(scope="module")
def compilation_cache(request):
    """JAX's persistent compilation cache in pytest's cache folder: the JAX commands compile their
    steps once per machine, and again only when a model or JAX changes."""
    cache = getattr(request.config, "cache", None)
    if cache is None or registry.missing_modules("jax"):
        yield
        return
    import jax

    settings = {"jax_compilation_cache_dir": str(cache.mkdir("tbd-docs-xla")), "jax_persistent_cache_min_compile_time_secs": 0.0}
    saved = {name: getattr(jax.config, name) for name in settings}
    for name, value in settings.items():
        jax.config.update(name, value)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, compilation_cache):
    root = tmp_path_factory.mktemp("docs")
    home, work = root / "home", root / "work"
    work.mkdir()
    (work / "nightly.toml").write_text(NIGHTLY_TOML)
    for name in REPO_FOLDERS:
        (work / name).symlink_to(ROOT / name)
    outcomes = {}
    import torch

    threads = torch.get_num_threads()  # in-process runs set it for their run; later tests get it back
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TBD_HOME", str(home))
        for key, value in ENVIRONMENT.items():
            mp.setenv(key, value)
        mp.chdir(work)
        for argv in STORE_SETUP:
            outcome = tbd(as_run(list(argv)), home)
            assert outcome.code == 0, f"store setup failed: {outcome}"
            outcomes[tuple(outcome.argv)] = outcome
    yield Prepared(home, work, outcomes)
    torch.set_num_threads(threads)


@pytest.fixture
def own_store(prepared, tmp_path, monkeypatch) -> Path:
    """A copy of the prepared store and work folder for one test; returns the store."""
    home, work = tmp_path / "home", tmp_path / "work"
    shutil.copytree(prepared.home, home)
    shutil.copytree(prepared.work, work, symlinks=True)
    monkeypatch.setenv("TBD_HOME", str(home))
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(work)
    return home


# --- the commands, one test per distinct command (the id names its first place) ---
COMMANDS = find_commands()


def _params() -> list:
    """One test per distinct command as the test runs it; those that train are marked slow."""
    groups: dict[tuple, list[DocCommand]] = {}
    for cmd in COMMANDS:
        kind, _ = classify(cmd)
        key = (kind, tuple(as_run(cmd.words[1:]) if kind == "run" else cmd.words))
        groups.setdefault(key, []).append(cmd)
    params = []
    for (kind, _), cmds in groups.items():
        words = cmds[0].words
        trains = kind == "run" and (words[1] in ("run", "scale", "memory") or "--verify" in words)
        params.append(pytest.param(cmds, id=f"{cmds[0].where} {' '.join(words)[:70]}", marks=[pytest.mark.slow] if trains else []))
    return params


def test_the_docs_have_commands_and_every_one_is_classified():
    assert len(COMMANDS) > 50, "the extraction found too few commands: has the docs' layout changed?"
    unknown = [f"{c.where}: {c.text!r}: {classify(c)[1]}" for c in COMMANDS if classify(c)[0] == "unknown"]
    assert not unknown, ("lines in shell blocks that are no command tbd's docs test knows (a block that is not commands "
                         "takes an info string such as ```text; see docs/architecture.md, 'Commands in the docs'):\n" + "\n".join(unknown))


@pytest.mark.parametrize("cmds", _params())
def test_doc_command(cmds: list[DocCommand], request):
    cmd = cmds[0]
    kind, detail = classify(cmd)
    where = ", ".join(c.where for c in cmds)
    if kind == "run":
        check_runs(cmd, request, where)
    elif kind == "gpu":
        check_gpu_only(cmd, request, where)
    elif kind in ("synopsis", "mention"):
        check_parses(cmd, where)
    elif kind == "static":
        check_static(cmd, detail, where)
    elif kind == "not-run":
        assert detail, f"{where}: a [not run: REASON] tag needs its reason"
    else:
        pytest.fail(f"{where}: {cmd.text!r} cannot be classified: {detail}")


def check_runs(cmd: DocCommand, request, where: str) -> None:
    home = request.getfixturevalue("own_store")
    prepared = request.getfixturevalue("prepared")
    argv = cmd.words[1:]
    if _framework_missing(argv):
        check_names_the_install(argv, home, where)
        return
    if argv[0] == "sweep":  # the whole sweep as written plans without error
        dry = tbd([*argv, "--dry-run"], home)
        assert dry.code == 0 and not dry.new_runs, f"{where}\n{dry}"
    executed = as_run(argv)
    out = prepared.outcomes.get(tuple(executed)) or tbd(executed, home)
    assert "Traceback" not in out.err, f"{where}\n{out}"
    code, says = EXPECTED_EXIT.get(" ".join(cmd.words), (0, ""))
    if argv[0] == "compare" and "--fail-if-slower" in argv and out.code == 1:
        # Two measurements of 3 steps each: the candidate may well be 5% slower; then say so.
        assert "regression:" in out.out, f"{where}\n{out}"
        return
    assert out.code == code, f"{where}: documented command failed\n{out}"
    assert says in out.err, f"{where}\n{out}"
    failed = [f"{r['id']}: {r['error']}" for r in out.new_runs if r["status"] == "failed"]
    assert not failed, f"{where}: the command stored failed runs {failed}\n{out}"
    if "--output" in argv:
        assert Path(_option(argv, "--output")).is_file(), f"{where}: no {_option(argv, '--output')} written\n{out}"


def check_gpu_only(cmd: DocCommand, request, where: str) -> None:
    if cuda_available():
        pytest.skip("a GPU is present: GPU-only commands are checked on machines without one")
    home = request.getfixturevalue("own_store")
    words = cmd.words[cmd.words.index("tbd"):]  # an srun line: the tbd command it starts
    if _framework_missing(words[1:]):
        check_names_the_install(words[1:], home, where)
        return
    out = tbd(words[1:], home)
    lines = out.err.strip().splitlines()
    assert out.code == 2 and len(lines) == 1 and lines[0].startswith("tbd: error:"), f"{where}: a GPU-only command must fail here with one line\n{out}"
    assert re.search(r"gpu|cuda|nvidia|ncu|nsight", lines[0], re.I), f"{where}: the line does not say a GPU is missing\n{out}"
    assert not out.new_runs, f"{where}: a run was stored\n{out}"


def _framework_missing(argv: list[str]) -> bool:
    framework = _option(argv, "--framework") or _option(argv, "-f")
    return framework in registry.framework_names() and bool(registry.missing_modules(framework))


def check_names_the_install(argv: list[str], home: Path, where: str) -> None:
    """A command of a framework not installed here: one line naming the install, exit 2."""
    out = tbd(argv, home)
    lines = out.err.strip().splitlines()
    assert out.code == 2 and len(lines) == 1 and "pip install" in lines[0] and not out.new_runs, f"{where}\n{out}"


def check_parses(cmd: DocCommand, where: str) -> None:
    parser, words, name = cli.build_parser(), cmd.words[1:], "tbd"
    if not _concrete(words[0]):  # `tbd COMMAND`: any command
        return
    while subcommands(parser) and words and _concrete(words[0]) and not words[0].startswith("-"):  # `tbd data make`: a group's command
        commands = subcommands(parser)
        assert words[0] in commands, f"{where}: '{name} {words[0]}' is no command of tbd (the commands there: {', '.join(commands)})"
        parser, name, words = commands[words[0]], f"{name} {words[0]}", words[1:]
    options = {o for action in parser._actions for o in action.option_strings}
    named = {part.split("=")[0] for w in words for part in w.strip("[]").split("|") if part.startswith("-")}
    assert named <= options, f"{where}: '{name}' has no option {sorted(named - options)}"


def _concrete(word: str) -> bool:
    """Not a metavariable: `X.py`, `TARGET`, `tbd[EXTRA]` and `PATH` name nothing to check."""
    return not is_synopsis(["tbd", word.removeprefix("tbd[").removesuffix("]")])


def check_static(cmd: DocCommand, program: str, where: str) -> None:
    words = [w for w in cmd.words if _concrete(w)]
    if program == "bench":
        script = ROOT / cmd.words[1]
        if not _concrete(cmd.words[1]):
            return
        assert script.is_file(), f"{where}: no script {cmd.words[1]}"
        declared = _declared_options(script)
        given = {w.split("=")[0] for w in words[2:] if w.startswith("-")}
        assert given <= declared, f"{where}: {cmd.words[1]} has no option {sorted(given - declared)}"
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in (w for w in words[1:] if not w.startswith("-")):
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{where}: the Makefile has no target {target}"
    elif program == "pip":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for spec in words[2:]:
            match = re.fullmatch(r"tbd\[([\w,-]+)\]", spec)
            assert match, f"{where}: the docs install tbd's extras only, not {spec!r}"
            missing = set(match.group(1).split(",")) - set(extras)
            assert not missing, f"{where}: pyproject.toml has no extra {sorted(missing)}"
    elif program == "pytest":
        takes_value = ("-m", "-k", "-p", "-c", "-o", "-n", "--durations", "--timeout", "--maxfail")
        given = cmd.words
        paths = [w.split("::")[0] for i, w in enumerate(given[1:], 1) if not w.startswith("-") and given[i - 1] not in takes_value]
        assert paths, f"{where}: a pytest line names the tests it runs"
        for path in filter(_concrete, paths):
            assert (ROOT / path).exists(), f"{where}: no test path {path}"
    else:
        pytest.fail(f"{where}: no static check for {program}")


def _declared_options(script: Path) -> set[str]:
    """The option strings a script's argparse declares (read from its source, not imported)."""
    found = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return found


def _option(argv: list[str], flag: str) -> str | None:
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def test_gpu_tag_and_cuda_flag_agree_with_the_classifier():
    """The GPU convention itself: `--device cuda` is GPU-only wherever it is, a tag marks the rest."""
    assert needs_cuda(["tbd", "run", "x", "--device", "cuda"]) and needs_cuda(["tbd", "sweep", "--devices=cuda"])
    assert not needs_cuda(["tbd", "sweep", "--devices", "cpu,cuda"])  # its CPU points run here
    tagged = DocCommand("tbd analyze latest --ncu", ROOT / "README.md", 1, inline=False, tag="GPU")
    assert classify(tagged)[0] == "gpu"
    assert classify(DocCommand("tbd results show ID", ROOT / "README.md", 1, inline=True))[0] == "synopsis"
    assert classify(DocCommand("tbd memory", ROOT / "README.md", 1, inline=True))[0] == "mention"
    assert classify(DocCommand("frobnicate --all", ROOT / "README.md", 1, inline=False))[0] == "unknown"


def test_a_groups_commands_are_named_and_checked_with_their_own_options():
    """`tbd data check` in prose names a command of the group `data`; a synopsis of `tbd data make`
    is checked against `data make`'s options, not those of `data`."""
    assert classify(DocCommand("tbd data check", ROOT / "README.md", 1, inline=True))[0] == "mention"
    assert classify(DocCommand("tbd data frobnicate", ROOT / "README.md", 1, inline=True))[0] == "run"  # not a command: it runs, and fails
    check_parses(DocCommand("tbd data make WORKLOAD --out DIR [--size N]", ROOT / "README.md", 1, inline=False), "synopsis")
    with pytest.raises(AssertionError, match="'tbd data make' has no option"):
        check_parses(DocCommand("tbd data make WORKLOAD --frobnicate N", ROOT / "README.md", 1, inline=False), "synopsis")
    with pytest.raises(AssertionError, match="'tbd data frobnicate' is no command"):
        check_parses(DocCommand("tbd data frobnicate NAME", ROOT / "README.md", 1, inline=False), "synopsis")
    assert as_run(["data", "make", "resnet50", "--out", "./imgs", "--size", "256"]) == ["data", "make", "resnet50", "--out", "./imgs", *SMALL_DATA["data make"]]
