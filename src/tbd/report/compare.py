"""Comparing two sets of runs: `tbd compare A B` exercises it.

A and B are each a run (id or unique prefix), a sweep (name or id) or a baseline file saved
with `tbd compare --save-baseline FILE A`. Runs are paired on their configuration; a field that
is one value on each side but differs between the sides (device cpu vs cuda, framework torch vs
jax) is what is being compared, so it is left out of the pairing key.

Only runs with a throughput are paired (`has_result`); a pair where either side did not converge
(status 'unconverged' or 'insufficient') has `converged = False`, and `tbd compare` calls no
difference significant on it unless asked (`--allow-unconverged`).

The ratio is B / A of throughput in the statistic the records use: median per-step rates, or
window rates (units / seconds) where a run was fed from disk or its steps differ in size. Its 95%
CI comes from a percentile bootstrap over the raw steady-state steps stored with each run
(record["samples"]): both sides resampled with replacement, the ratio taken each time. No
distribution is assumed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tbd.errors import UsageError
from tbd.harness.stats import rotations, sizes_vary
from tbd.results import envs
from tbd.results.record import has_result, headline
from tbd.results.store import NoSuchRun, Store

BASELINE_FORMAT = "tbd-baseline/1"
KEY_FIELDS = ("workload", "framework", "flavor", "device", "batch_size", "precision", "compile", "channels_last", "python")
BOOTSTRAP_ROUNDS = 2000


@dataclass
class Pair:
    label: str
    a: dict[str, Any]
    b: dict[str, Any]
    ratio: float
    ci_low: float
    ci_high: float

    @property
    def converged(self) -> bool:
        """Both sides reached their target CI: only then is a significance verdict meaningful."""
        return self.a["status"] == "ok" and self.b["status"] == "ok"

    @property
    def unconverged_sides(self) -> str:
        return ", ".join(f"{side} {r['status']}" for side, r in (("A", self.a), ("B", self.b)) if r["status"] != "ok")


# ---- what A and B name ------------------------------------------------------------------


def resolve(store: Store, target: str) -> tuple[str, list[dict[str, Any]]]:
    """(description, records) for a baseline file, a sweep name or id, or a run id."""
    path = Path(target)
    if path.is_file():
        return f"baseline {path}", load_baseline(path)
    from tbd.sweep.engine import sweep_records

    found = sweep_records(store, target)
    if found:
        sweep, records = found
        if records:
            return f"sweep {sweep['name']} ({sweep['id']})", records
    try:
        record = store.get(target)
    except NoSuchRun:  # other errors (an ambiguous prefix, a damaged store) name their own fix
        raise UsageError(f"'{target}' is neither a file, a sweep nor a run in {store.home}; 'tbd results' lists runs") from None
    return f"run {record['id']}", [record]


def save_baseline(path: str | Path, source: str, records: list[dict[str, Any]], replace: bool = False) -> Path:
    """Write a baseline file; an existing file is replaced only when `replace` (a baseline is the
    reference later runs are judged by: losing it silently loses that judgement)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--save-baseline {p} is a folder; name a file in it, e.g. {p / 'baseline.json'}")
    if p.exists() and not replace:
        raise UsageError(f"--save-baseline {p} exists; add --force to replace it, or name another file")
    if not p.parent.exists():
        raise UsageError(f"folder {p.parent} does not exist; create it or choose another baseline path")
    try:
        p.write_text(json.dumps({"format": BASELINE_FORMAT, "source": source, "records": records}, indent=1, default=str))
    except OSError as exc:
        raise UsageError(f"cannot write baseline {p} ({exc.strerror or exc}); choose another path") from None
    return p


def load_baseline(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable baseline ({exc}); save one with 'tbd compare --save-baseline {path} RUN_OR_SWEEP'") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("records"), list):
        raise UsageError(f"{path} is not a tbd baseline file; save one with 'tbd compare --save-baseline {path} RUN_OR_SWEEP'")
    return data["records"]


# ---- statistics -------------------------------------------------------------------------


def steady_rates(record: dict[str, Any]) -> np.ndarray:
    """Per-step throughput (units / s) of the steady window, from the raw samples."""
    u, t = steady_steps(record)
    return u / t


def steady_steps(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(units, seconds) per step of the steady window, from the raw samples."""
    s = record.get("samples") or {}
    t = np.asarray(s.get("step_s") or [], dtype=float)
    u = np.asarray(s.get("units") or [], dtype=float)
    if len(t) == 0 or len(t) != len(u):
        return np.asarray([], dtype=float), np.asarray([], dtype=float)
    start = int((record.get("metrics") or {}).get("warmup_steps") or 0)
    return (u[start:], t[start:]) if start < len(t) else (u, t)


def fed_from_disk(record: dict[str, Any]) -> bool:
    """A run whose steps took batches from a loader: its throughput is the window rate (docs/metrics.md)."""
    return bool((record.get("samples") or {}).get("input_wait_s"))


def window_rated(record: dict[str, Any]) -> bool:
    """The record's throughput is the window rate: fed from disk, or steps of different sizes
    (as `tbd.harness.measure.window_rated` decides for the run, and records since say in
    `method.throughput_statistic`)."""
    said = (record.get("method") or {}).get("throughput_statistic")
    if said:
        return said == "window"
    return fed_from_disk(record) or sizes_vary((record.get("samples") or {}).get("units") or [])


def throughput_ratio_ci(before: dict[str, Any], after: dict[str, Any]) -> tuple[float, float, float]:
    """after / before with its 95% bootstrap CI, in the statistic the records' throughputs use: the
    ratio of window rates where either run was fed from disk (its waits come in bursts) or has steps
    of different sizes, else the ratio of median per-step rates."""
    if window_rated(before) or window_rated(after):
        return window_ratio_ci(steady_steps(before), steady_steps(after))
    return ratio_ci(steady_rates(before), steady_rates(after))


def window_ratio_ci(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], rounds: int = BOOTSTRAP_ROUNDS,
                    seed: int = 0) -> tuple[float, float, float]:
    """Ratio of window rates (units / seconds) b/a and its 95% percentile-bootstrap interval over
    steps, or over whole rotations where the steps cycle through resident batches of different
    sizes (`tbd.harness.stats.rotations`: the same window rate and unit of resampling as the runs' CIs)."""
    (ua, ta), (ub, tb) = rotations(*a), rotations(*b)
    if len(ta) == 0 or len(tb) == 0:
        return math.nan, math.nan, math.nan
    ratio = float((ub.sum() / tb.sum()) / (ua.sum() / ta.sum()))
    if len(ta) < 2 or len(tb) < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ia, ib = rng.integers(0, len(ta), (rounds, len(ta))), rng.integers(0, len(tb), (rounds, len(tb)))
    boots = (ub[ib].sum(1) / tb[ib].sum(1)) / (ua[ia].sum(1) / ta[ia].sum(1))
    return ratio, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def ratio_ci(a: np.ndarray, b: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians b/a and its 95% percentile-bootstrap interval (nan bounds if too few samples)."""
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(b) / np.median(a))
    if len(a) < 2 or len(b) < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, size=(rounds, len(a))), axis=1)
    mb = np.median(rng.choice(b, size=(rounds, len(b))), axis=1)
    boots = mb / ma
    return ratio, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


# ---- pairing ------------------------------------------------------------------------------


def varying_fields(a: list[dict], b: list[dict]) -> list[str]:
    """Fields with one value on each side that differ: those are what is being compared."""
    out = []
    for f in KEY_FIELDS:
        va = {r["config"].get(f) for r in a}
        vb = {r["config"].get(f) for r in b}
        if len(va) == 1 and len(vb) == 1 and va != vb:
            out.append(f)
    return out


def pair_up(a: list[dict], b: list[dict]) -> tuple[list[Pair], list[str], list[str]]:
    """(pairs, fields compared across, labels of points found on one side only)."""
    a = [r for r in a if has_result(r)]
    b = [r for r in b if has_result(r)]
    across = varying_fields(a, b)
    keep = [f for f in KEY_FIELDS if f not in across]

    def key(r):
        return tuple(r["config"].get(f) for f in keep)

    if len(a) == 1 and len(b) == 1:  # two runs: compare them whatever they are
        index_a, index_b = {key(a[0]): a[0]}, {key(a[0]): b[0]}
    else:
        index_a = {key(r): r for r in sorted(a, key=lambda r: r["created_at"])}
        index_b = {key(r): r for r in sorted(b, key=lambda r: r["created_at"])}
    pairs, lonely = [], []
    for k in list(index_a) + [k for k in index_b if k not in index_a]:
        ra, rb = index_a.get(k), index_b.get(k)
        label = point_label(ra or rb, keep)
        if ra is None or rb is None:
            lonely.append(f"{label} (only in {'A' if rb is None else 'B'})")
            continue
        ratio, lo, hi = throughput_ratio_ci(ra, rb)
        if math.isnan(ratio):  # no raw samples (old records): fall back to the stored medians
            ta, tb = headline(ra)["throughput"], headline(rb)["throughput"]
            ratio = tb / ta if ta and tb else math.nan
        pairs.append(Pair(label, ra, rb, ratio, lo, hi))
    return pairs, across, lonely


def point_label(r: dict, fields: list[str]) -> str:
    c = r["config"]
    parts = []
    for f in fields:
        v = c.get(f)
        if f == "batch_size":
            parts.append(f"bs{v}")
        elif f in ("compile", "channels_last"):
            if v:
                parts.append(f.replace("_", "-"))
        elif f == "python":
            if v is not None:
                parts.append(f"@{envs.label(v, r)}")
        else:
            parts.append(str(v))
    return "/".join(parts) or c["workload"]


# ---- one set of runs across Python environments -------------------------------------------------


@dataclass
class EnvironmentComparison:
    baseline: str  # label of the environment every other one is compared with
    environments: dict[str, dict[str, str]]  # label -> what ran there (interpreter, Python, framework versions)
    pairs: list[Pair]  # B = the other environment, A = the baseline, one per shared point
    lonely: list[str]  # points measured in one environment only


def environment_label(record: dict[str, Any]) -> str:
    return envs.label((record.get("config") or {}).get("python"), record)


def describe_environment(record: dict[str, Any]) -> dict[str, str]:
    env = record.get("environment") or {}
    c = record["config"]
    return {"interpreter": str(env.get("interpreter") or c.get("python") or "?"), "Python": str(env.get("python") or "?"),
            "framework": f"{c['framework']} {env.get('framework_version') or '?'}"}


def across_environments(records: list[dict[str, Any]]) -> EnvironmentComparison | None:
    """The runs of one sweep (or any set) that ran the same configuration in several interpreters
    (config.python: `tbd sweep --python current,ENV`), each environment against the baseline: the
    interpreter running tbd where it took part, else the first. Ratios of median throughput with
    the same bootstrap CIs as `tbd compare`. None when the runs span fewer than two environments."""
    measured = sorted((r for r in records if has_result(r)), key=lambda r: (r["created_at"], r["id"]))
    pythons = list(dict.fromkeys(r["config"].get("python") for r in measured))
    if len(pythons) < 2:
        return None
    base = None if None in pythons else pythons[0]
    keep = [f for f in KEY_FIELDS if f != "python"]
    newest: dict[tuple, dict[str, Any]] = {}
    for r in measured:  # newest wins
        newest[(r["config"].get("python"), tuple(r["config"].get(f) for f in keep))] = r
    labels = {p: environment_label(next(r for r in measured if r["config"].get("python") == p)) for p in pythons}
    described = {}
    for (python, _), r in newest.items():
        described.setdefault(labels[python], describe_environment(r))
    points = list(dict.fromkeys(key for _, key in newest))
    pairs, lonely = [], []
    for key in points:
        a = newest.get((base, key))
        for other in (p for p in pythons if p != base):
            b = newest.get((other, key))
            if a is None or b is None:
                if a is not None or b is not None:
                    only = a or b
                    lonely.append(f"{point_label(only, keep)} (only in {environment_label(only)})")
                continue
            ratio, lo, hi = throughput_ratio_ci(a, b)
            pairs.append(Pair(f"{point_label(a, keep)}: {labels[other]} / {labels[base]}", a, b, ratio, lo, hi))
    return EnvironmentComparison(labels[base], described, pairs, list(dict.fromkeys(lonely)))


# ---- environments ---------------------------------------------------------------------------


def environment_facts(record: dict[str, Any]) -> dict[str, str]:
    env = record.get("environment") or {}
    gpu = env.get("gpu") or {}
    facts = {"host": env.get("hostname"), "cpu": env.get("cpu"), "gpu": gpu.get("name"), "driver": gpu.get("driver"),
             "python": env.get("python"), "interpreter": env.get("interpreter"), "environment": env.get("env_name"),
             "tbd": env.get("tbd_version"), "commit": (env.get("source") or {}).get("commit")}
    facts.update({f"library {k}": v for k, v in (env.get("libraries") or {}).items()})
    return {k: str(v) for k, v in facts.items() if v is not None}


def environment_warnings(a: list[dict], b: list[dict]) -> list[str]:
    """One line per fact (machine, driver, library version, ...) whose values differ between A and B."""
    side_a: dict[str, set] = {}
    side_b: dict[str, set] = {}
    for records, side in ((a, side_a), (b, side_b)):
        for r in records:
            for k, v in environment_facts(r).items():
                side.setdefault(k, set()).add(v)
    out = []
    for k in sorted(set(side_a) | set(side_b)):
        if k.startswith("library ") and not (k in side_a and k in side_b):
            continue  # a library only one side used (jax runs in A only) is no difference in what both ran
        va, vb = side_a.get(k, {"-"}), side_b.get(k, {"-"})
        if va != vb:
            out.append(f"{k} differs: A {', '.join(sorted(va))} vs B {', '.join(sorted(vb))}")
    return out


def regressions(pairs: list[Pair], fail_if_slower_pct: float) -> list[Pair]:
    """Pairs whose B is slower than A by more than the threshold (on the median ratio)."""
    limit = 1.0 - fail_if_slower_pct / 100.0
    return [p for p in pairs if not math.isnan(p.ratio) and p.ratio < limit]
