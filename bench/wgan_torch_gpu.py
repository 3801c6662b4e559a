"""WGAN-GP (paper flavor) PyTorch train step on one GPU: where the time goes, variant by variant.

    PYTHONPATH=src python3 bench/wgan_torch_gpu.py --out DIR              # one H200: all rows, ~6 min
    PYTHONPATH=src python3 bench/wgan_torch_gpu.py --out DIR --variants pc,pc_ro,pc_cd,p --no-extra   # < 4 min
    PYTHONPATH=src python3 bench/wgan_torch_gpu.py --out DIR --device cpu --quick --variants p --no-extra  # script check

Each variant opens tbd's own session (`tbd.frameworks.open_session`: the harness's build, bf16
autocast, channels_last, cuDNN autotuning, synthetic batches resident on the device), runs
warm-up steps, times steps with the session's own `run_steps` (CUDA events around each step, one
sync per call), then traces a few more with the plugin's `trace.capture` (kernels only unless
--host-trace) and summarizes them with tbd's analysis (kernels per step, kernel time by class, the
top kernels, GPU idle time between the first and last kernel).

Variants (one step = 5 critic iterations with the gradient penalty + 1 generator iteration):
  a          as tbd runs it (channels_last, GroupNorm(1, C), F.avg_pool2d, Adam foreach)
  pc         --option gradient_penalty=func --compile: the critic loss as one torch.func function
             of its parameters, compiled whole (fullgraph), the generator compiled too
  pc_ro      pc with --option compile_mode=reduce-overhead (CUDA graphs)
  pc_cd      pc with layer_norm=ops and mean_pool=reshape (the JAX impl's formulation)
  p          gradient_penalty=func eager (the same function op by op, as a is)
  b          channels_last off
  c          --option layer_norm=ops: the critic's layer norm as plain ops
  c_lowp     c with statistics taken from the bf16 activations, bf16 output (approximate; a patch here)
  d_reshape  --option mean_pool=reshape: 2x2 mean pooling as a mean over a reshaped view
  d_conv     mean pooling as a stride-2 depthwise conv with fixed weights 1/4 (a patch here)
  cd         c and d_reshape together: the critic's ops as tbd's JAX implementation writes them
  f          --option optimizer=fused: both Adams fused
  g          the critic's 3-channel input conv run on 8 channels (5 zero channels; a patch here)
  e          the faster choice on each axis above (channels_last, norm, pool, optimizer, input
             channels) together, where at least two are >= 1% faster than a
  a_again    `a` once more at the end: the drift between the first and last variant
All variants have the same parameters (checked) and compute the same function (c_lowp within the
bf16 rounding of its statistics); each prints its first step's loss against a's (same weights,
batches and noise). `a` runs first whatever --variants says (the rows are compared with it), then
the rows in the order asked (by default the gradient_penalty=func rows first, as the newest
question); a compiled row reports its compilations and their seconds (compile_count, compile_s)
and the compilations during the timed steps (recompiles_timed, 0 when nothing recompiles).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tbd import frameworks, registry
from tbd.config import RunConfig
from tbd.workloads.wgan import torch_impl


@dataclasses.dataclass
class Variant:
    name: str
    what: str
    channels_last: bool = True
    options: dict = dataclasses.field(default_factory=dict)
    conv_pool: bool = False  # patch the critic's mean pooling to a depthwise conv
    pad_input: bool = False  # patch the critic's first conv to see 8 input channels (3 + 5 zeros)
    lowp_norm: bool = False  # patch layer_norm=ops to take statistics of the bf16 input and return bf16
    compile: bool = False  # --compile (with gradient_penalty=func: the whole critic loss)


def depthwise_mean_pool(x):
    """2x2 mean pooling as a stride-2 depthwise convolution with fixed weights 1/4 (a constant,
    not a parameter: the parameter count is unchanged)."""
    c = x.shape[1]
    key = (c, x.dtype, x.device)
    weight = _POOL_WEIGHTS.get(key)
    if weight is None:
        weight = _POOL_WEIGHTS[key] = torch.full((c, 1, 2, 2), 0.25, dtype=x.dtype, device=x.device)
    return F.conv2d(x, weight, stride=2, groups=c)


_POOL_WEIGHTS: dict = {}


def lowp_layer_norm(norm):
    """layer_norm=ops without its fp32 copy of the input: statistics straight from the bf16
    activations (the reduction accumulates in fp32; mean and variance come back rounded to bf16),
    scale and shift applied in bf16. Not the same numbers as GroupNorm's fp32 path: within bf16
    rounding of the statistics (the first-step loss against `a` shows how close)."""
    def forward(x):
        var, mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)
        scale = norm.weight.view(1, -1, 1, 1) * torch.rsqrt(var.float() + norm.eps)
        shift = norm.bias.view(1, -1, 1, 1) - mean.float() * scale
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
    return forward


def padded_input_conv(conv):
    """The critic's 3-channel input conv computed on 8 channels (the image plus 5 zero channels,
    the weight plus 5 zero input slices): the same function and parameters, with channel counts
    that tensor-core conv kernels take without padding their own (the slow conv in the double
    backward may be this layer's)."""
    def forward(x):
        extra = 8 - x.shape[1]
        x8 = F.pad(x, (0, 0, 0, 0, 0, extra))
        w8 = F.pad(conv.weight, (0, 0, 0, 0, 0, extra))
        if x.is_contiguous(memory_format=torch.channels_last):
            x8, w8 = x8.contiguous(memory_format=torch.channels_last), w8.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x8, w8, conv.bias, padding=conv.padding)
    return forward

AXES = {  # variant that changes one setting of `a`, per axis
    "channels_last": ["b"], "layer_norm": ["c", "c_lowp"], "mean_pool": ["d_reshape", "d_conv"], "optimizer": ["f"],
    "input_channels": ["g"],
}


def base_variants() -> list[Variant]:
    return [
        Variant("a", "as is: channels_last, GroupNorm(1,C), avg_pool2d, Adam foreach"),
        # The gradient_penalty=func rows first, the compiled ones by how much they can answer in a
        # short call (pc_ro reuses most of pc's compiled kernels).
        Variant("pc", "gradient_penalty=func + torch.compile", options={"gradient_penalty": "func"}, compile=True),
        Variant("pc_ro", "gradient_penalty=func + torch.compile mode=reduce-overhead (CUDA graphs)",
                options={"gradient_penalty": "func", "compile_mode": "reduce-overhead"}, compile=True),
        Variant("pc_cd", "gradient_penalty=func + torch.compile + layer_norm=ops + mean_pool=reshape",
                options={"gradient_penalty": "func", "layer_norm": "ops", "mean_pool": "reshape"}, compile=True),
        Variant("p", "gradient_penalty=func (eager)", options={"gradient_penalty": "func"}),
        Variant("b", "channels_last off", channels_last=False),
        Variant("c", "layer_norm=ops", options={"layer_norm": "ops"}),
        Variant("c_lowp", "layer_norm=ops, statistics of the bf16 input, bf16 out (approximate)",
                options={"layer_norm": "ops"}, lowp_norm=True),
        Variant("d_reshape", "mean_pool=reshape", options={"mean_pool": "reshape"}),
        Variant("d_conv", "mean pool as depthwise stride-2 conv", conv_pool=True),
        Variant("cd", "layer_norm=ops + mean_pool=reshape (the JAX impl's formulation)",
                options={"layer_norm": "ops", "mean_pool": "reshape"}),
        Variant("f", "Adam fused", options={"optimizer": "fused"}),
        Variant("g", "critic's input conv on 8 channels (3 + 5 zero)", pad_input=True),
    ]


def best_combination(rows: dict, variants: dict) -> Variant | None:
    """The faster setting on each axis (by median step time, kept only if >= 1% faster than `a`)."""
    base = rows["a"]["step_ms_median"]
    combo = Variant("e", "best combination:", channels_last=True)
    picked = []
    for names in AXES.values():
        best = min((n for n in names if n in rows), key=lambda n: rows[n]["step_ms_median"], default=None)
        if best is None or rows[best]["step_ms_median"] > 0.99 * base:
            continue
        v = variants[best]
        picked.append(best)
        combo.channels_last = combo.channels_last and v.channels_last
        combo.options.update(v.options)
        combo.conv_pool = combo.conv_pool or v.conv_pool
        combo.pad_input = combo.pad_input or v.pad_input
        combo.lowp_norm = combo.lowp_norm or v.lowp_norm
    if len(picked) < 2:
        return None  # nothing to combine: e would repeat a or a single variant
    combo.what += " " + " + ".join(picked)
    return combo


def open_variant(v: Variant, args) -> object:
    flavor = "tiny" if args.quick else "paper"
    config = RunConfig(workload="wgan", framework="torch", flavor=flavor, device=args.device, batch_size=args.batch,
                       precision="bf16", channels_last=v.channels_last, options=dict(v.options), isolate=False,
                       data_pool=2, compile=v.compile).validated()
    if v.compile:
        torch._dynamo.reset()  # each compiled variant compiles its own functions afresh, from an empty Dynamo cache
    session = frameworks.open_session(config)
    if v.conv_pool:
        for block in session.model.critic.blocks:
            block.pool = depthwise_mean_pool
    if v.pad_input:
        session.model.critic.inp.forward = padded_input_conv(session.model.critic.inp)
    if v.lowp_norm:
        for module in session.model.critic.modules():
            if isinstance(module, torch_impl.ChannelLayerNorm):
                module.forward = lowp_layer_norm(module)
    return session


def kernel_summary(session, steps: int, out_dir: Path, name: str, host: bool, keep: bool) -> dict:
    """torch.profiler trace of `steps` steps (tbd's capture) summarized by tbd's trace analysis."""
    from tbd.analysis.summary import summarize
    from tbd.analysis.trace import load_trace
    from tbd.frameworks.torch import trace as torch_trace

    path = out_dir / f"trace_{name}.json.gz"
    captured = torch_trace.capture(session, steps, path, host=host)
    s = summarize(load_trace(path), steps)
    dev, hst = s.get("device"), s.get("host") or {}
    result = {"profiled_step_ms": [x * 1e3 for x in captured["step_s"]], "host_ops_per_step": hst.get("ops_per_step"),
              "launches_per_step": hst.get("launches_per_step")}
    if dev:
        result.update({
            "kernels_per_step": dev["kernels"] / steps,
            "kernel_ms_per_step": dev["kernel_time_ms"] / steps,
            "gpu_idle_ms_per_step": dev["idle_ms"] / steps,
            "window_ms_per_step": s["window_ms"] / steps,
            "class_ms_per_step": {c: round(v["time_ms"] / steps, 2) for c, v in dev["classes"].items()},
            "top_kernels": [{"short": k["short"], "class": k["class"], "per_step": k["count"] / steps,
                             "ms_per_step": k["time_ms"] / steps, "mean_us": k["mean_us"], "share_pct": k["share_pct"]}
                            for k in dev["top_kernels"][:5]],
        })
    if not keep:
        path.unlink(missing_ok=True)
    return result


def measure(v: Variant, args, out_dir: Path, n_params_expected: int | None) -> dict:
    t0 = time.perf_counter()
    session = open_variant(v, args)
    n_params = session.num_parameters
    if n_params_expected is not None and n_params != n_params_expected:
        raise SystemExit(f"variant {v.name} has {n_params} parameters, not {n_params_expected}: it is not the same model")
    # Every variant starts from the same weights, batches and noise (the session seeds them), so
    # the first step's critic loss is one check that it computes the same function as `a`.
    session.run_steps(1)
    first_loss = session.last_loss()
    session.run_steps(max(args.warmup - 1, 0))  # cuDNN autotuning of each conv shape, optimizer state, allocator growth
    compiles_before = session.compile_count
    times = session.run_steps(args.steps)
    step_ms = [s * 1e3 for s in times.seconds]
    images = times.units[0]
    row = {"variant": v.name, "what": v.what, "channels_last": v.channels_last, "options": v.options,
           "conv_pool": v.conv_pool, "pad_input": v.pad_input, "lowp_norm": v.lowp_norm, "parameters": n_params, "images_per_step": images,
           "step_ms_median": statistics.median(step_ms), "step_ms_mean": statistics.fmean(step_ms),
           "step_ms_min": min(step_ms), "step_ms_max": max(step_ms), "first_step_loss": first_loss,
           "loss": session.last_loss(), "compile": v.compile, "compile_method": session.info.method.get("compile")}
    if v.compile:
        row.update(compile_count=session.compile_count, compile_s=session.compile_s,
                   recompiles_timed=session.compile_count - compiles_before)
    row["images_per_s"] = images / (row["step_ms_median"] / 1e3)
    if args.profile_steps:
        row["profile"] = kernel_summary(session, args.profile_steps, out_dir, v.name, host=args.host_trace or args.device == "cpu",
                                        keep=args.keep_traces)
    row["memory"] = session.memory()
    session.close()
    del session
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    row["variant_s"] = time.perf_counter() - t0
    return row


def line(row: dict, base: dict | None) -> str:
    prof = row.get("profile") or {}
    kern = prof.get("kernels_per_step")
    speed = base["step_ms_median"] / row["step_ms_median"] if base else 1.0
    loss_diff = row["first_step_loss"] - base["first_step_loss"] if base else 0.0
    compiled = (f"  compile {row['compile_s']:.0f} s in {row['compile_count']}, {row['recompiles_timed']} while timed"
                if row.get("compile") else "")
    return (f"{row['variant']:10s} {row['step_ms_median']:8.1f} ms/step  {row['images_per_s']:8.1f} img/s  "
            f"{'-' if kern is None else round(kern):>6} kernels/step  {speed:5.2f}x vs a  "
            f"first-step loss {row['first_step_loss']:+.4f} ({loss_diff:+.4f} vs a)  ({row['what']}){compiled}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for wgan_torch_gpu.json (and traces with --keep-traces)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="tiny flavor, few steps: a check of the script (with --device cpu)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: 64, or 4 with --quick)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per variant (default 6)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 20)")
    ap.add_argument("--profile-steps", type=int, default=None, help="traced steps per variant (default 2; 0: no trace)")
    ap.add_argument("--budget-s", type=float, default=225.0,
                    help="start no variant that would end past this many seconds, by the time of the slowest row of its kind "
                         "so far (eager or compiled) (default 225: the whole run stays under 4 min)")
    ap.add_argument("--compile-guess-s", type=float, default=75.0,
                    help="seconds a compiled row is expected to add to an eager one, before any compiled row has run (default 75)")
    ap.add_argument("--host-trace", action="store_true",
                    help="trace the host too (host ops and launches per step; a larger trace, slower to read)")
    ap.add_argument("--keep-traces", action="store_true", help="keep each variant's trace (gzipped Chrome JSON) in --out")
    ap.add_argument("--variants", default="",
                    help="comma-separated subset of a,pc,pc_ro,pc_cd,p,b,c,c_lowp,d_reshape,d_conv,cd,f,g (e and a_again follow)")
    ap.add_argument("--no-extra", action="store_true", help="skip the combination e and a_again after the chosen rows")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu --quick to check the script")
    args.batch = args.batch or (4 if args.quick else 64)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 6)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 20)
    args.profile_steps = args.profile_steps if args.profile_steps is not None else (1 if args.quick else 2)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    flavor = "tiny" if args.quick else "paper"
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "workload": "wgan", "flavor": flavor, "batch": args.batch, "precision": "bf16",
              "n_critic": registry.get_spec("wgan").flavor(flavor)["n_critic"],
              "warmup": args.warmup, "steps": args.steps, "profile_steps": args.profile_steps,
              "timing": "median of the session's per-step CUDA-event times (run_steps), after the warm-up",
              "impl": torch_impl.__name__, "rows": []}
    variants = {v.name: v for v in base_variants()}
    wanted = [n.strip() for n in args.variants.split(",") if n.strip()] or list(variants)
    unknown = [n for n in wanted if n not in variants]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]}; choose from {', '.join(variants)}")
    if "a" not in wanted:
        wanted.insert(0, "a")
    rows: dict[str, dict] = {}
    print(f"WGAN-GP torch, {flavor} flavor, batch {args.batch}, bf16, {result['device']}, torch {torch.__version__}", flush=True)
    skipped = []

    def expected_s(v: Variant) -> float:
        """The slowest row of v's kind so far; before the first compiled row, an eager row plus --compile-guess-s."""
        like = [r["variant_s"] for r in rows.values() if r.get("compile") == v.compile]
        if like:
            return max(like)
        eager = max((r["variant_s"] for r in rows.values() if not r.get("compile")), default=0.0)
        return eager + (args.compile_guess_s if v.compile else 0.0)

    def over_budget(v: Variant) -> bool:
        expected = expected_s(v)
        if time.perf_counter() - started + expected < args.budget_s:
            return False
        skipped.append(v.name)
        print(f"{v.name:10s} skipped: it would end past the --budget-s of {args.budget_s:.0f} s (expected {expected:.0f} s)", flush=True)
        return True

    failed: dict[str, str] = {}

    def save() -> None:
        result.update(rows=list(rows.values()), skipped=skipped, failed=failed, total_s=time.perf_counter() - started)
        (args.out / "wgan_torch_gpu.json").write_text(json.dumps(result, indent=1, default=str))

    def run(v: Variant) -> None:
        """Measure one variant; a failure other than `a`'s is recorded and the run goes on."""
        if v.name != "a" and over_budget(v):
            return
        try:
            rows[v.name] = measure(v, args, args.out, rows["a"]["parameters"] if "a" in rows else None)
        except Exception as exc:  # one variant's failure (OOM, a kernel missing) is a result
            if v.name == "a":
                raise
            failed[v.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"{v.name:10s} failed: {failed[v.name]}", flush=True)
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
            return
        finally:
            save()
        print(line(rows[v.name], rows.get("a")), flush=True)

    for name in wanted:
        run(variants[name])
    combo = None if args.no_extra else best_combination(rows, variants)
    if combo is not None:
        variants["e"] = combo
        run(combo)
    elif not args.no_extra:
        print("e          no two settings were each >= 1% faster than a: no combination to run")
    if not args.no_extra:
        run(dataclasses.replace(variants["a"], name="a_again", what="a, once more (drift)"))
    for name, row in rows.items():
        row["speedup_vs_a"] = rows["a"]["step_ms_median"] / row["step_ms_median"]
        prof = row.get("profile") or {}
        for k in prof.get("top_kernels", []):
            print(f"    {name:10s} {k['per_step']:6.0f}/step {k['ms_per_step']:8.2f} ms/step {k['mean_us']:8.1f} us  "
                  f"[{k['class']}] {k['short'][:80]}")
        if prof.get("class_ms_per_step"):
            print(f"    {name:10s} ms/step by class: {prof['class_ms_per_step']}; GPU idle {prof['gpu_idle_ms_per_step']:.1f} ms "
                  f"of a {prof['window_ms_per_step']:.1f} ms traced step")
    save()
    print(f"wrote {args.out / 'wgan_torch_gpu.json'} ({result['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
