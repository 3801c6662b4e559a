"""What a sweep runs: `tbd sweep --file sweep.toml` (or flags, or `--preset quick|paper|frameworks`).

A `SweepSpec` holds the axes (workloads, frameworks, flavors, devices, precisions, compile) and
the batch sizes; `plan()` expands it against the registry into `Line`s, one per configuration,
each with its batch sizes in increasing order (so an OOM can skip the larger ones). "*" in
workloads means every registered workload and in frameworks every installed framework that
implements the workload, so workloads added later join presets without edits.

A sweep's id names what it measures *and with what*: the expanded plan, the sweep's name, the
code revision of tbd (commit, dirty flag and a hash of the uncommitted diff) and the versions of
the libraries that run it (`identity`). Running the same sweep again under the same name with
the same code resumes it; another name, another commit or another library version is a new
sweep that measures every point again (`tbd sweep --resume ID` continues a given sweep, `--rerun`
measures again whatever the id).

Sweep files are TOML; an unknown key or a bad value is an error that names the file, the line
and the key (tomllib gives the line of syntax errors; for keys we find it in the text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tbd import registry
from tbd.config import DEVICES, MAX_BATCH, MAX_SEED, PRECISIONS, RunConfig
from tbd.errors import UsageError, closest, unknown
from tbd.results import envs, interpreters

PRESETS = ("quick", "paper", "frameworks")
BUDGET_KEYS = {"max_steps": int, "max_time": float, "target_ci": float, "min_timed_steps": int, "seed": int}
TOP_KEYS = ("name", "workloads", "frameworks", "flavors", "devices", "precisions", "batch_sizes", "batch_scale",
            "compile", "channels_last", "max_batch", "budget", "options", "python", "data")
MAX_NAME_CHARS = 200  # a sweep's name is printed on every line; longer is a mistake (and slow to print)
MAX_FILE_BYTES = 2**20  # sweep files are a few lines of TOML
DEFAULT_BUDGET = {"max_steps": 300, "max_time": 60.0, "target_ci": 1.0, "min_timed_steps": 10, "seed": 0}


@dataclass
class SweepSpec:
    name: str | None = None
    workloads: list[str] = field(default_factory=lambda: ["*"])
    frameworks: list[str] = field(default_factory=lambda: ["*"])
    flavors: list[str] = field(default_factory=lambda: ["tiny"])
    devices: list[str] = field(default_factory=lambda: ["auto"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batch_sizes: list[int] | None = None  # None: the flavor's own batch size (or batch_scale x it)
    batch_sizes_per_workload: dict[str, list[int]] = field(default_factory=dict)
    batch_scale: list[float] | None = None  # multiples of the flavor's batch size
    compile: list[bool] = field(default_factory=lambda: [False])
    channels_last: bool = False  # applied where the workload supports it
    max_batch: int | None = None  # bisect the largest batch that fits, up to this bound
    budget: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BUDGET))
    options: dict[str, str] = field(default_factory=dict)  # framework settings (--option KEY=VALUE), e.g. from `tbd tune`
    # Interpreters each configuration runs in, one line each: "current" (the one running tbd), an
    # environment's name (`tbd env create`) or an interpreter's path (docs/environments.md).
    python: list[str] = field(default_factory=lambda: ["current"])
    # Datasets on disk (docs/data.md): one path for every workload, or a path per workload
    # (workloads without one train on synthetic data).
    data: str | None = None
    data_per_workload: dict[str, str] = field(default_factory=dict)
    isolate: bool = True
    source: str = "flags"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepSpec":
        """A stored definition (`to_dict`, as the store's sweeps table keeps it); fields an older
        tbd did not store take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in data.items() if k in names})
        spec.budget = {**DEFAULT_BUDGET, **spec.budget}
        return spec

    def differences(self, other: "SweepSpec") -> list[str]:
        """The fields of what is measured that differ from `other`'s: not the name, nor how points
        are launched (isolate) or where the definition came from."""
        def measured(spec: SweepSpec) -> dict[str, Any]:
            data = json.loads(json.dumps(spec.to_dict(), default=str))  # as stored: tuples are lists
            return {k: v for k, v in data.items() if k not in ("name", "isolate", "source")}

        mine, theirs = measured(self), measured(other)
        return [k for k in mine if mine[k] != theirs.get(k)]


@dataclass
class Line:
    """One configuration swept over batch sizes."""

    base: dict[str, Any]  # RunConfig fields except batch_size
    batches: list[int]

    @property
    def label(self) -> str:
        b = self.base
        extra = (" +compile" if b["compile"] else "") + (" channels_last" if b["channels_last"] else "") + (f" data={b['data']}" if b.get("data") else "")
        where = "" if b.get("python") is None else f" @{envs.label(b['python'])}"
        return f"{b['workload']}/{b['framework']}/{b['flavor']} {b['device']} {b['precision']}{extra}{where}"

    def config(self, batch: int, **overrides: Any) -> RunConfig:
        return RunConfig(**{**self.base, "batch_size": batch, **overrides})


@dataclass
class Plan:
    spec: SweepSpec
    lines: list[Line]
    notes: list[str]  # combinations not run, and why
    sweep_id: str
    name: str
    plan_hash: str = ""  # what is measured (the expanded lines), without the name or the code
    identity: dict[str, Any] = field(default_factory=dict)  # code revision and library versions in the id

    @property
    def num_points(self) -> int:
        return sum(len(line.batches) for line in self.lines)


# ---- expansion ---------------------------------------------------------------------------


def plan(spec: SweepSpec, home: str | Path | None = None) -> Plan:
    """The sweep's lines; `home` is where environment names of the `python` axis are looked up."""
    from tbd.metrics.devices import best_device

    if (problem := spec_problem(spec)) is not None:
        raise UsageError(problem[2])
    lines: list[Line] = []
    notes: list[str] = []
    workloads = registry.workload_names() if "*" in spec.workloads else spec.workloads
    devices = [best_device() if d == "auto" else d for d in spec.devices]
    pythons = list(dict.fromkeys(envs.resolve_word(word, home) for word in spec.python))
    for w, python in ((w, p) for w in workloads for p in pythons):
        ws = registry.get_spec(w)  # unknown names are a UsageError naming the valid ones
        for fw in _frameworks_for(w, spec.frameworks, notes, python):
            for flavor in spec.flavors:
                if flavor not in ws.flavors:
                    notes.append(f"{w} has no flavor '{flavor}'{closest(flavor, ws.flavors)}")
                    continue
                for device in dict.fromkeys(devices):
                    for precision in spec.precisions:
                        for comp in spec.compile:
                            base = dict(workload=w, framework=fw, flavor=flavor, device=device, precision=precision, compile=comp,
                                        channels_last=spec.channels_last and ws.convolutional,
                                        max_steps=spec.budget["max_steps"], max_time_s=float(spec.budget["max_time"]),
                                        target_ci_pct=float(spec.budget["target_ci"]), min_timed_steps=spec.budget["min_timed_steps"],
                                        seed=spec.budget["seed"], isolate=spec.isolate, python=python)
                            if spec.options:  # only then: the plans (and ids) of sweeps without options stay as they were
                                base["options"] = dict(spec.options)
                            data = spec.data_per_workload.get(w, spec.data)
                            if data:  # only where given, so the plans (and ids) of synthetic sweeps stay as they were
                                base["data"] = data
                            batches = _batches(spec, w, ws.flavor(flavor).batch_size)
                            if batches[-1] > MAX_BATCH:  # bad input, not a line that cannot run here
                                raise UsageError(f"batch size {batches[-1]} is beyond any device (at most {MAX_BATCH:,}); give smaller batch sizes")
                            try:  # one check per line: validity does not depend on the batch size
                                checked = RunConfig(**base, batch_size=batches[0]).validated()
                            except UsageError as exc:
                                where = "" if python is None else f" @{envs.label(python)}"
                                notes.append(f"{w}/{fw}/{flavor} {device} {precision}{' +compile' if comp else ''}{where}: {exc}")
                                continue
                            if data:  # the dataset's absolute path and the loader's default workers, as checked
                                base.update(data=checked.data, workers=checked.workers)
                            lines.append(Line(base, batches))
    check_name(spec.name)
    # What is measured: how points are launched (isolate) does not change it.
    what = [[{k: v for k, v in line.base.items() if k != "isolate"}, line.batches] for line in lines]
    plan_hash = _hash(what + [spec.max_batch])
    name = spec.name or f"sweep-{plan_hash}"
    ident = identity(sorted({line.base["framework"] for line in lines}), sorted({line.base["python"] for line in lines} - {None}))
    return Plan(spec, lines, notes, _hash([plan_hash, name, ident]), name, plan_hash, ident)


def spec_problem(spec: SweepSpec) -> tuple[str | None, str, str] | None:
    """(table, key, message) for the first name in the spec that is valid nowhere: a misspelled
    workload, framework, flavor, device, precision or option is bad input, refused before anything
    runs. Names valid only in some combinations (fp16 on the CPU, a flavor one workload lacks, a
    torch option in a jax line) are not problems here: they become the plan's 'not run' notes."""
    try:
        workloads = registry.workload_names() if "*" in spec.workloads else [registry.resolve(w).name for w in spec.workloads]
    except UsageError as exc:
        return None, "workloads", str(exc)
    try:
        frameworks = registry.framework_names() if "*" in spec.frameworks else spec.frameworks
        plugins = [registry.framework(f) for f in frameworks]
    except UsageError as exc:
        return None, "frameworks", str(exc)
    flavors = {flavor for w in workloads for flavor in registry.get_spec(w).flavors}
    for key, kind, valid in (("flavors", "flavor", flavors), ("devices", "device", (*DEVICES, "auto")), ("precisions", "precision", PRECISIONS)):
        for name in getattr(spec, key):
            if name not in valid:
                return None, key, str(unknown(kind, name, valid))
    options = {key: [p.capabilities.option_values.get(key) for p in plugins if key in p.capabilities.options] for key in spec.options}
    for key, value in spec.options.items():
        if not options[key]:
            valid = sorted({k for p in plugins for k in p.capabilities.options})
            return "options", key, str(unknown(f"{'/'.join(frameworks)} option", key, valid))
        allowed = [v for values in options[key] for v in (values or ())]
        if all(options[key]) and value not in allowed:  # every framework with the option lists its values
            return "options", key, f"{key} = '{value}' is not one of {', '.join(dict.fromkeys(allowed))}"
    return None


def _hash(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def identity(frameworks: list[str], pythons: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """What a sweep's points were measured with: tbd's code revision and the library versions of
    the core and of each framework in the sweep, and those of each other interpreter it runs in.
    Part of the sweep id, so new code or a new library version measures again."""
    from tbd.results import environment

    libraries: tuple[str, ...] = environment.CORE_LIBRARIES
    for fw in frameworks:
        libraries += registry.framework(fw).libraries
    out = {"source": environment.source_revision(with_diff=True), "libraries": environment.library_versions(libraries)}
    if pythons:
        out["interpreters"] = {}
        for python in pythons:
            facts = interpreters.probe(python)
            out["interpreters"][python] = {"python": facts["python"], "libraries": facts.get("libraries", {})}
    return out


def check_name(name: str | None, where: str = "the sweep's name") -> None:
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise UsageError(f"{where} is {len(name):,} characters long; give a name of at most {MAX_NAME_CHARS} (--name)")


def _frameworks_for(workload: str, wanted: list[str], notes: list[str], python: str | None = None) -> list[str]:
    """Frameworks of `wanted` ("*": all) that implement the workload and are installed where it
    runs: here, or in the other interpreter `python`."""
    if python is None:
        installed, where = registry.is_installed, ""
    else:
        have = set(interpreters.installed_frameworks(python))
        installed, where = have.__contains__, f" in {envs.label(python)} ({python})"
    if "*" in wanted:
        out = [f for f in registry.implementations(workload) if installed(f)]
        notes += [f"{workload}/{f}: {f} is not installed{where} ({registry.framework(f).install})"
                  for f in registry.implementations(workload) if not installed(f)]
        return out
    out = []
    for f in wanted:
        registry.framework(f)  # unknown framework: UsageError
        if not registry.has_implementation(workload, f):
            notes.append(f"{workload}/{f}: no {f} implementation yet")
        elif not installed(f):
            notes.append(f"{workload}/{f}: {f} is not installed{where} ({registry.framework(f).install})")
        else:
            out.append(f)
    return out


def _batches(spec: SweepSpec, workload: str, flavor_batch: int) -> list[int]:
    if workload in spec.batch_sizes_per_workload:
        sizes = spec.batch_sizes_per_workload[workload]
    elif spec.batch_sizes:
        sizes = spec.batch_sizes
    elif spec.batch_scale:
        sizes = [max(1, round(flavor_batch * s)) for s in spec.batch_scale]
    else:
        sizes = [flavor_batch]
    return sorted(set(int(b) for b in sizes))


# ---- sources: presets, files, flags ------------------------------------------------------


def load_preset(name: str) -> SweepSpec:
    if name not in PRESETS:
        raise UsageError(f"unknown preset '{name}'{closest(name, PRESETS)}; valid: {', '.join(PRESETS)}")
    text = resources.files("tbd.sweep.presets").joinpath(f"{name}.toml").read_text()
    spec = parse_text(text, f"preset {name}", lenient_workloads=True)
    spec.name = spec.name or name
    return spec


def load_file(path: str | Path) -> SweepSpec:
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"sweep file {p} is {p.stat().st_size / 2**20:.1f} MiB; a sweep file is a few lines of TOML (docs/sweeps.md)")
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read sweep file {p} ({exc.strerror}); check the path given to --file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"sweep file {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML") from None
    spec = parse_text(text, str(p))
    spec.name = spec.name or p.stem
    return spec


def parse_text(text: str, where: str, lenient_workloads: bool = False) -> SweepSpec:
    """A SweepSpec from TOML text; `where` names the file in errors. Presets are lenient about
    per-workload batch sizes of workloads not registered (yet)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}:{_syntax_error_line(exc, text)}: not valid TOML ({exc}); fix the syntax at that line") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply to read; a sweep file needs at most a few levels of tables") from None
    spec = SweepSpec(source=where)

    def fail(table: str | None, key: str, problem: str) -> UsageError:
        line = find_line(text, table, key)
        name = f"{table}.{key}" if table else key
        return UsageError(f"{where}:{line or '?'}: key '{name}' {problem}")

    for key, value in data.items():
        if key not in TOP_KEYS:
            raise fail(None, key, f"is unknown{closest(key, TOP_KEYS)}; valid keys: {', '.join(TOP_KEYS)}")
        if key == "name":
            if not isinstance(value, str) or not value.strip():
                raise fail(None, key, "must be a non-empty string")
            spec.name = value.strip()
        elif key in ("workloads", "frameworks", "flavors", "devices", "precisions", "python"):
            items = _str_list(value)
            if items is None and key == "python":
                raise fail(None, key, 'must be a list of interpreters: "current", environment names (tbd env list) or paths, '
                                      'e.g. python = ["current", "torch211"]')
            if items is None:
                raise fail(None, key, f'must be a list of names, e.g. {key} = ["a", "b"] (or "*")')
            setattr(spec, key, items)
        elif key == "batch_sizes":
            if isinstance(value, dict):
                for w, sizes in value.items():
                    if not registry.is_workload(w):
                        if lenient_workloads:
                            continue
                        raise fail("batch_sizes", w, f"is not a registered workload{closest(w, registry.WORKLOADS)}")
                    if _int_list(sizes) is None:
                        raise fail("batch_sizes", w, "must be a list of positive integers")
                    spec.batch_sizes_per_workload[w] = _int_list(sizes)
            elif _int_list(value) is not None:
                spec.batch_sizes = _int_list(value)
            else:
                raise fail(None, key, "must be a list of positive integers (or a table of them per workload)")
        elif key == "batch_scale":
            if not isinstance(value, list) or not value or not all(isinstance(x, (int, float)) and x > 0 for x in value):
                raise fail(None, key, "must be a list of positive numbers (multiples of the flavor's batch size)")
            spec.batch_scale = [float(x) for x in value]
        elif key == "compile":
            vals = value if isinstance(value, list) else [value]
            if not vals or not all(isinstance(v, bool) for v in vals):
                raise fail(None, key, "must be true, false or a list of them")
            spec.compile = list(dict.fromkeys(vals))
        elif key == "channels_last":
            if not isinstance(value, bool):
                raise fail(None, key, "must be true or false")
            spec.channels_last = value
        elif key == "max_batch":
            if value is True:
                spec.max_batch = 65536
            elif value is False:
                spec.max_batch = None
            elif isinstance(value, int) and value >= 1:
                spec.max_batch = value
            else:
                raise fail(None, key, "must be true, false or the largest batch size to try")
        elif key == "options":
            if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
                raise fail(None, key, 'must be a table of framework settings, e.g. [options] compile_mode = "max-autotune"')
            spec.options = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        elif key == "data":
            if isinstance(value, str) and value.strip():
                spec.data = value.strip()
            elif isinstance(value, dict) and all(isinstance(v, str) and v.strip() for v in value.values()):
                for w, path in value.items():
                    if not registry.is_workload(w):
                        raise fail("data", w, f"is not a registered workload{closest(w, registry.WORKLOADS)}")
                    spec.data_per_workload[w] = path.strip()
            else:
                raise fail(None, key, 'must be a dataset path, or a table of paths per workload ([data] resnet50 = "/data/imagenet")')
        elif key == "budget":
            if not isinstance(value, dict):
                raise fail(None, key, "must be a table, e.g. [budget] max_time = 30")
            for bk, bv in value.items():
                if bk not in BUDGET_KEYS:
                    raise fail("budget", bk, f"is unknown{closest(bk, BUDGET_KEYS)}; valid keys: {', '.join(BUDGET_KEYS)}")
                typ = BUDGET_KEYS[bk]
                ok = isinstance(bv, (int, float)) and not isinstance(bv, bool) and (typ is float or isinstance(bv, int)) and _finite(bv)
                if not ok or (bk != "seed" and bv <= 0) or (bk == "seed" and not 0 <= bv <= MAX_SEED):
                    what = f"an integer from 0 to {MAX_SEED}" if bk == "seed" else f"a finite positive {'integer' if typ is int else 'number'}"
                    raise fail("budget", bk, f"must be {what}, got {bv!r}")
                spec.budget[bk] = typ(bv)
    for table, key, path in [(None, "data", spec.data)] + [("data", w, p) for w, p in spec.data_per_workload.items()]:
        if path and not Path(path).expanduser().exists():
            raise fail(table, key, f"names {path}, which does not exist (from {Path.cwd()}); give the dataset's path")
    if (problem := spec_problem(spec)) is not None:
        table, key, message = problem
        raise UsageError(f"{where}:{find_line(text, table, key) or '?'}: key '{f'{table}.{key}' if table else key}': {message}")
    return spec


def _syntax_error_line(exc: tomllib.TOMLDecodeError, text: str) -> int:
    """The line of a TOML syntax error: tomllib says it in the message ("at line 3, column 7"; an
    attribute from Python 3.14), except at the end of the document, which is the last line."""
    if getattr(exc, "lineno", None):
        return exc.lineno
    found = re.search(r"at line (\d+)", str(exc))
    return int(found.group(1)) if found else max(1, len(text.splitlines()))


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def find_line(text: str, table: str | None, key: str) -> int | None:
    """1-based line where `key` is set inside `[table]` (or at the top level), by scanning text."""
    current: str | None = None
    pattern = re.compile(rf"""^\s*("{re.escape(key)}"|'{re.escape(key)}'|{re.escape(key)})\s*=""")
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1)
            continue
        if current == table and pattern.match(line):
            return number
    # Inline tables or dotted keys: fall back to the first line mentioning the key.
    for number, line in enumerate(text.splitlines(), 1):
        if re.search(rf"\b{re.escape(key)}\b", line):
            return number
    return None


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return [v.strip() for v in value]
    return None


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        return list(value)
    return None


def split_names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(t) for t in split_names(text)]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated positive integers, e.g. {flag} 4,8,16; got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{flag} takes comma-separated positive integers, e.g. {flag} 4,8,16; got '{text}'")
    return values


def parse_bool_list(text: str, flag: str) -> list[bool]:
    words = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}
    out = []
    for t in split_names(text):
        if t.lower() not in words:
            raise UsageError(f"{flag} takes off, on or off,on; got '{t}'")
        out.append(words[t.lower()])
    return list(dict.fromkeys(out)) or [False]
