"""The levers `tbd tune` pulls: each proposes changes of a run configuration, most promising first.

A change is a partial config (`apply`): RunConfig fields, and framework settings under
"options" (`{"options": {"compile_mode": "max-autotune"}}`), the same form the recommendations
of `tbd.analysis.recommend` carry, so a recommendation and a lever's proposal match when their
`apply` is equal. Framework-neutral levers are declared here; a framework's own settings come
from its plugin (`Capabilities.tunables`), so nothing here names a framework.

A lever over one config field is one line (`field_lever`): the DDP bucket size of a distributed
run, and for a run that reads a dataset from disk (--data) its loader workers (doubled, up to
the usable cores) and JPEG decoding on the GPU (where the framework and the dataset allow it).

`--keep-semantics` leaves out the levers marked `changes_semantics` (precision, batch size):
the others change speed, not the training math (up to floating-point reassociation).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tbd import registry
from tbd.config import RunConfig
from tbd.data import recipes
from tbd.data.base import usable_loader_cores
from tbd.topology import world_size

# Precisions from slowest to fastest for training; fp16 and bf16 share a rank (fp16 adds loss scaling).
PRECISION_RANK = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 2}
PRECISION_ORDER = ("bf16", "fp16", "tf32")  # tried in this order where faster than the current one
CPU_PRECISIONS = ("fp32", "bf16")
MIN_BATCH_STEP = 1.1  # a larger batch less than 10% larger is not worth a trial
DDP_BUCKET_MAX_MB = 200.0


@dataclass(frozen=True)
class Change:
    lever: str
    apply: dict[str, Any]
    label: str  # "precision fp32 -> bf16"

    @property
    def key(self) -> str:
        return change_key(self.apply)


@dataclass
class Context:
    """What the levers see: the configuration to improve and what the search knows so far."""

    config: RunConfig  # validated
    suggested: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # lever -> applies the analysis recommends
    batch_fails: int | None = None  # the smallest batch that ran out of memory during the search
    batch_max: int | None = None  # a confirmed largest batch (`tbd memory --max-batch`)

    @property
    def spec(self):
        return registry.get_spec(self.config.workload)

    @property
    def caps(self):
        return registry.framework(self.config.framework).capabilities


Proposal = list[Change] | str  # the changes to try, or why the lever does not apply here


@dataclass(frozen=True)
class Lever:
    name: str
    title: str
    keys: tuple[str, ...]  # what it changes: RunConfig fields, "options.KEY" for framework settings
    propose: Callable[[Context], Proposal]
    changes_semantics: bool = False

    def owns(self, apply: dict[str, Any]) -> bool:
        return bool(set(flat_keys(apply)) & set(self.keys))


def flat_keys(apply: dict[str, Any]) -> list[str]:
    return [f"options.{k}" for k in apply.get("options", {})] + [k for k in apply if k != "options"]


def change_key(apply: dict[str, Any]) -> str:
    return json.dumps(apply, sort_keys=True, default=str)


def apply_change(config: RunConfig, apply: dict[str, Any]) -> RunConfig:
    """`config` with `apply` applied: fields replaced, framework options merged (not replaced)."""
    fields = {k: v for k, v in apply.items() if k != "options"}
    options = {**config.options, **apply.get("options", {})}
    return dataclasses.replace(config, **fields, options=options)


# ---- framework-neutral levers -------------------------------------------------------------


def _precision(ctx: Context) -> Proposal:
    cfg, spec, caps = ctx.config, ctx.spec, ctx.caps
    allowed = [p for p in PRECISION_ORDER if PRECISION_RANK[p] > PRECISION_RANK.get(cfg.precision, 0)
               and p in caps.precisions and (spec.precisions is None or p in spec.precisions)
               and (cfg.device == "cuda" or p in CPU_PRECISIONS)]
    if not allowed:
        return f"no faster precision than {cfg.precision} here" + (f" ({spec.precisions_note})" if spec.precisions_note else "")
    return [Change("precision", {"precision": p}, f"precision {cfg.precision} -> {p}") for p in allowed]


def _round_batch(batch: int, world: int) -> int:
    """A multiple of the ranks (each takes an equal share) and, from 16 per rank, of 8 (tensor-core tiles)."""
    step = world * (8 if batch >= 16 * world else 1)
    return max(world, batch // step * step)


def _batch(ctx: Context) -> Proposal:
    cfg = ctx.config
    b, world = cfg.batch_size, world_size(cfg)
    limits = [x for x in (ctx.batch_max, (ctx.batch_fails - 1) if ctx.batch_fails else None) if x]
    upper = min(limits) if limits else None
    targets = [a["batch_size"] for a in ctx.suggested.get("batch_size", [])] or [2 * b]
    out = []
    for target in targets:
        if upper is not None and target > upper:
            # past a failure: halfway to it (a bisection by measured trials); else the confirmed maximum
            target = min(upper, (b + ctx.batch_fails) // 2) if ctx.batch_fails else upper
        target = _round_batch(target, world)
        if target >= b * MIN_BATCH_STEP and all(c.apply["batch_size"] != target for c in out):
            out.append(Change("batch_size", {"batch_size": target}, f"batch {b} -> {target}"))
    if out:
        return out
    bound = f"batch {ctx.batch_fails} ran out of memory" if ctx.batch_fails else f"the confirmed maximum is {ctx.batch_max}"
    return f"no batch {MIN_BATCH_STEP:g}x larger than {b} fits ({bound})"


def _channels_last(ctx: Context) -> Proposal:
    if not ctx.spec.convolutional:
        return "not a convolutional workload"
    if not ctx.caps.channels_last:
        return ctx.caps.native_layout or "the framework has no layout switch"
    return [] if ctx.config.channels_last else [Change("channels_last", {"channels_last": True}, "channels_last memory format")]


def _compile(ctx: Context) -> Proposal:
    if ctx.caps.always_compiled:
        return ctx.caps.always_compiled
    if not ctx.caps.compile:
        return "the framework has no optional compiler"
    return [] if ctx.config.compile else [Change("compile", {"compile": True}, ctx.caps.compile)]


def field_lever(name: str, config_field: str, values: Callable[[Context], tuple[Any, ...]], *,
                when: Callable[[Context], bool] = lambda ctx: True, title: str = "", why_not: str = "does not apply to this run",
                changes_semantics: bool = False) -> Lever:
    """A lever over one RunConfig field: `values(ctx)` the values to try from the current config,
    where `when(ctx)` holds; a recommendation's value for the field (if any) is tried first."""

    def propose(ctx: Context) -> Proposal:
        if not when(ctx):
            return why_not
        now = getattr(ctx.config, config_field)
        tried = [a[config_field] for a in ctx.suggested.get(name, [])] + list(values(ctx))
        return [Change(name, {config_field: v}, f"{title or config_field} {now:g} -> {v:g}" if isinstance(v, (int, float)) else
                       f"{title or config_field} {now} -> {v}") for v in dict.fromkeys(tried) if v != now]

    return Lever(name, title or config_field, (config_field,), propose, changes_semantics)


NEUTRAL_LEVERS: tuple[Lever, ...] = (
    Lever("precision", "precision", ("precision",), _precision, changes_semantics=True),
    Lever("batch_size", "batch size", ("batch_size",), _batch, changes_semantics=True),
    Lever("channels_last", "channels_last", ("channels_last",), _channels_last),
    Lever("compile", "compiler", ("compile",), _compile),
)

def _loader_cores(ctx: Context) -> int:
    return usable_loader_cores(ctx.config.device, ctx.config.nproc_per_node)


def _gpu_decode_applies(ctx: Context) -> bool:
    cfg = ctx.config
    return (cfg.data is not None and cfg.device == "cuda" and cfg.decode == "cpu" and bool(ctx.caps.gpu_decode)
            and recipes.gpu_decodable(ctx.spec))


# After the framework's own settings: levers of distributed runs and of runs reading real data.
LATE_LEVERS: tuple[Lever, ...] = (
    field_lever("ddp_bucket", "ddp_bucket_mb", lambda c: (min(DDP_BUCKET_MAX_MB, c.config.ddp_bucket_mb * 4),),
                when=lambda c: world_size(c.config) > 1 and c.config.parallel == "ddp" and c.config.ddp_bucket_mb < DDP_BUCKET_MAX_MB,
                title="DDP bucket MiB", why_not="not a multi-process DDP run (or its buckets are at the maximum)"),
    field_lever("workers", "workers", lambda c: (min(_loader_cores(c), max(2, 2 * (c.config.workers or 0))),),
                when=lambda c: c.config.data is not None and (c.config.workers or 0) < _loader_cores(c),
                title="loader workers", why_not="not reading a dataset from disk (--data), or its workers use every usable core"),
    field_lever("decode", "decode", lambda c: ("gpu",), when=_gpu_decode_applies, title="JPEG decoding",
                why_not="needs --data with JPEG images (resnet50, inception_v3), a GPU and a framework that decodes on it"),
)


def _tunable_lever(t) -> Lever:
    """A lever over one framework setting the plugin declares (`Capabilities.tunables`)."""

    def propose(ctx: Context) -> Proposal:
        cfg = ctx.config
        if cfg.device not in t.devices:
            return f"applies on {' or '.join(t.devices)} only"
        if t.needs_compile and not cfg.compile:
            return "needs --compile"
        if t.applies is not None and not t.applies(cfg, ctx.spec):
            return "does not apply to this workload"
        now = str(cfg.options.get(t.option, "default"))
        values = [v for v in t.values_for(cfg) if v != now]
        return [Change(t.option, {"options": {t.option: v}}, f"{t.title} {now} -> {v}") for v in values] or "no other value to try here"

    return Lever(t.option, t.title, (f"options.{t.option}",), propose)


def levers_for(config: RunConfig) -> list[Lever]:
    """Every lever for this config's framework, in the order they are tried when the analysis
    gives no estimate: the neutral ones, the framework's settings, then the late ones."""
    plugin = registry.framework(config.framework)
    return [*NEUTRAL_LEVERS, *(_tunable_lever(t) for t in plugin.capabilities.tunables), *LATE_LEVERS]


def lever_names(config: RunConfig) -> list[str]:
    return [lever.name for lever in levers_for(config)]
