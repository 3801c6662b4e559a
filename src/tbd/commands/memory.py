"""`tbd memory WORKLOAD`: where the memory of one training step goes, by category, by layer and
over the step; `--max-batch` predicts the largest batch that fits.

The profile is printed, saved as JSON and a PNG plot in `<store>/memory/`, and stored as a run
(`kind: memory`, with the profile under `memory_profile`) so `tbd results show ID` finds it.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Any

from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import add_workload_options, model_hparams, positive_float, positive_int
from tbd.config import RunConfig
from tbd.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "memory", help="memory breakdown of a training step; largest batch that fits", formatter_class=EXAMPLES,
        description="Profile one training step of WORKLOAD and break its peak memory into weights, gradients, optimizer "
                    "state, input batch, feature maps, workspace, allocator cache and framework overhead; a table of "
                    "feature-map bytes per layer; a timeline over the step. Saved as JSON and PNG and stored as a run.",
        epilog="examples:\n  tbd memory resnet50\n  tbd memory resnet50 --framework jax --batch-size 8\n"
               "  tbd memory resnet50 --device cuda --flavor paper --batch-size 64 --precision bf16\n"
               "  tbd memory resnet50 --max-batch --memory 16GiB\n"
               "  tbd memory resnet50 --device cuda --flavor paper --max-batch --fit-batches 16,32,64",
    )
    p.add_argument("workload", help="workload name (see 'tbd list')")
    add_workload_options(p)
    p.add_argument("--warmup", type=positive_int, default=1, help="untracked steps before the profiled one (default: 1)")
    p.add_argument("--max-batch", action="store_true", help="fit memory = fixed + per-sample x batch on a few batches and predict the largest that fits")
    p.add_argument("--memory", help="with --max-batch: memory to fit into, like 80GiB, 512MiB or 16GB (default: the device's)")
    p.add_argument("--fit-batches", help="with --max-batch: batch sizes to fit on, like 4,8,16 (default: b/4, b/2, b)")
    p.add_argument("--confirm-time", type=positive_float, default=600.0,
                   help="with --max-batch on a GPU: seconds the confirming search may take (default: 600)")
    p.add_argument("--no-confirm", action="store_true", help="with --max-batch: only predict, do not confirm with real training steps")
    p.add_argument("--known-fit", type=positive_int, metavar="N",
                   help="with --max-batch on a GPU: a batch known to train (an earlier search's); the search starts 2%% above it")
    p.add_argument("--known-oom", type=positive_int, metavar="N",
                   help="with --max-batch on a GPU: a batch known to run out of memory; the search starts 2%% below it (bisects with --known-fit)")
    p.add_argument("--confirm-only", action="store_true",
                   help="with --max-batch and --known-fit/--known-oom on a GPU: skip the fit and go on with an earlier search "
                        "(a search stopped by its time limit; the prediction is the earlier run's)")
    p.add_argument("--expandable-segments", action="store_true",
                   help="with --max-batch: confirm under the framework's allocator setting against fragmentation (PyTorch: expandable segments)")
    p.add_argument("--layers", type=positive_int, default=15, help="rows of the per-layer table to print (default: 15)")
    add_home(p)
    p.set_defaults(func=memory)


# Seconds a round of wider fit batches may be expected to take (4x the round before) on the CPU.
WIDENING_ROUND_LIMIT_S = 60.0

# Kept with each fit batch: the largest tensor and where the step made it (the headroom's facts),
# and the peak's op, its in-op scratch and the tensors' own peak (what the line was fitted on).
PEAK_FACTS = ("allocated_bytes", "largest_tensor_bytes", "largest_tensor_phase", "largest_backward_tensor_bytes", "op", "in_op_scratch_bytes",
              "live_peak_bytes")


def memory(args) -> int:
    from tbd.memory.batch_model import default_fit_batches, parse_batches
    from tbd.results.memory_profile import parse_size
    from tbd.metrics.devices import best_device

    # Every input is checked before anything runs or is written.
    known_given = args.known_fit or args.known_oom
    if (args.memory or args.fit_batches or args.no_confirm or args.confirm_only or args.expandable_segments or known_given) and not args.max_batch:
        raise UsageError("--memory, --fit-batches, --no-confirm, --confirm-only, --expandable-segments, --known-fit and --known-oom go with "
                         "--max-batch; add --max-batch")
    if args.confirm_only and not known_given:
        raise UsageError("--confirm-only goes on from an earlier search: give its answers with --known-fit N (and --known-oom M)")
    if args.confirm_only and (args.no_confirm or args.fit_batches):
        raise UsageError("--confirm-only skips the fit and confirms: drop --no-confirm and --fit-batches")
    if args.known_fit and args.known_oom and args.known_oom <= args.known_fit:
        raise UsageError(f"--known-oom {args.known_oom} is not above --known-fit {args.known_fit}; a batch that runs out of memory lies above one that trains")
    memory_bytes = parse_size(args.memory) if args.memory else None
    from tbd import registry

    if not registry.framework(args.framework).capabilities.memory_profile:
        with_profiler = [f for f in registry.framework_names() if registry.framework(f).capabilities.memory_profile]
        raise UsageError(f"tbd memory has no profiler for {args.framework} yet; use --framework {' or '.join(with_profiler)}")
    device = best_device() if args.device == "auto" else args.device
    config = RunConfig(workload=args.workload, framework=args.framework, flavor=args.flavor, device=device,
                       batch_size=args.batch_size, precision=args.precision, channels_last=args.channels_last,
                       hparams=model_hparams(args), data_pool=1, isolate=False).validated()
    spec = registry.get_spec(config.workload)
    flavor = spec.flavor(config.flavor)
    if args.max_batch and spec.longest_inputs is not None:
        # Variable-length inputs: size the batch at the longest the flavor draws, so the figure
        # holds for every bucket (a line through random bucket lengths is not a line at all).
        longest = spec.longest_inputs(config.resolved_hparams())
        config = dataclasses.replace(config, hparams={**config.hparams, **longest}).validated()
    fit_batches = parse_batches(args.fit_batches) if args.fit_batches else default_fit_batches(config.batch_size, flavor.min_batch)
    if fit_batches[0] < flavor.min_batch:
        raise UsageError(f"--fit-batches: {config.workload} {config.flavor} trains at batch {flavor.min_batch} or more "
                         f"({flavor.min_batch_note}); start the list at {flavor.min_batch}")

    from rich.markup import escape

    from tbd.memory import max_batch, profiler, render
    from tbd.results.memory_profile import fmt_bytes
    from tbd.report.tables import make_console
    from tbd.results.store import Store

    store = Store(args.home).prepare()  # a store that cannot take the profile fails before profiling
    console = make_console()
    console.print(f"profiling one training step of {config.workload} ({config.framework}, {config.flavor}, {device}, batch {config.batch_size}) ...")
    if args.max_batch and spec.longest_inputs is not None:
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                          for k, v in spec.longest_inputs(flavor.hparams).items())
        console.print(f"sizing at the longest inputs the flavor draws ({shown})")
    prof = _guarded(profiler.profile, config, args.warmup)
    render.print_profile(prof, console, args.layers)
    profiles = [prof]
    over = False  # the budget below what the smallest measured batch needed (--max-batch)
    if args.max_batch and args.confirm_only:
        # A long search stopped by its time limit goes on without refitting: on a GPU the fit of a
        # large model (wgan fp32: four profiles, 265 s) can take as long as a probe.
        prof["batch_model"] = {"fit_skipped": "--confirm-only: no fit; the search goes on from the given answers",
                               "confirmed": _confirm(config, None, args, memory_bytes, console)}
    elif args.max_batch:
        console.print(f"fitting the batch-size model on batches {', '.join(map(str, fit_batches))} ...")
        limit, note = profiler.budget(prof, memory_bytes)
        # On a GPU larger batches are added until the line is not extrapolated far (its allocator
        # is not linear at scale); on the CPU the prediction is only a rough guide.
        extend = limit if device == "cuda" and prof["status"] == "ok" else None
        began = time.monotonic()
        model, fitted = _guarded(profiler.fit_batch_model, config, fit_batches, args.warmup, known={config.batch_size: prof},
                                 budget_bytes=extend)
        round_s = time.monotonic() - began
        profiles += [p for p in fitted if all(p is not q for q in profiles)]
        # A budget below what the smallest batch measured already needed: no batch fits, and
        # larger fit batches cannot change that.
        smallest = min((p for p in profiles if p["status"] == "ok"), key=lambda p: p["batch_size"], default=None)
        over = smallest is not None and profiler.model_bytes(smallest) > limit
        # Without that extension (the CPU), the default batches of a small model can peak in its
        # optimizer step, where no activation is held (resnet50 tiny): fit again on batches 4x as
        # large, while their feature maps fit (in the budget, and in the host's free memory,
        # where these profiles run) and the round would not take long (a round of 4x the
        # batches takes about 4x the time). Batches the user chose are kept, with advice.
        room = min(limit, max_batch.host_room_bytes())
        for _ in range(0 if args.fit_batches or extend or over else profiler.MAX_WIDENINGS):
            if not (wider := profiler.widened_fit_batches(model, fitted, fit_batches, room)):
                break
            if 4 * round_s > WIDENING_ROUND_LIMIT_S:
                console.print(f"not fitting on batches {', '.join(map(str, wider))}: about {4 * round_s:.0f} s of profiling here "
                              f"(the last batches took {round_s:.0f} s)")
                break
            console.print(f"not every peak holds the activations (a small step peaks in its optimizer); fitting on batches {', '.join(map(str, wider))} ...")
            measured = {p["batch_size"]: p for p in profiles if p["status"] == "ok"}
            began = time.monotonic()
            wider_model, wider_fitted = _guarded(profiler.fit_batch_model, config, wider, args.warmup, known=measured, budget_bytes=extend)
            round_s = time.monotonic() - began
            profiles += [p for p in wider_fitted if all(p is not q for q in profiles)]
            if wider_model is None:  # the larger batches did not run: the smaller ones' line and advice stand
                break
            model, fitted, fit_batches = wider_model, wider_fitted, wider
        unmeasured = next((p["peak"]["not_measured"] for p in fitted if p["status"] == "ok" and p["peak"].get("not_measured")), "")
        if unmeasured:  # no batches would help: the framework does not say what the step held
            why = f"{unmeasured}; run on a GPU (or another framework here) for a prediction"
        elif over:
            why = (f"batch {smallest['batch_size']} alone needed {fmt_bytes(profiler.model_bytes(smallest))}, "
                   f"more than the budget of {fmt_bytes(limit)}, so no batch fits" + ("; give a larger --memory" if memory_bytes is not None else ""))
        elif model is None:
            why = "fewer than two of the fit batches ran; give smaller --fit-batches"
        elif why := profiler.unusable_fit(model, fitted) or (None if extend else profiler.mixed_peaks(model, fitted)):
            # The peaks did not grow with the batch: batches a few times larger may reach the activations.
            why += f"; measure larger batches, e.g. --fit-batches {','.join(str(4 * b) for b in fit_batches)}"
        if why:
            prof["batch_model"] = {"error": f"no prediction: {why}",
                                   **(model.to_dict() if model else {})}
            console.print(f"[red]{prof['batch_model']['error']}[/]")
        else:
            prof["batch_model"] = {**model.to_dict(), "budget_bytes": limit, "budget_note": note, "max_batch": model.max_batch(limit),
                                   "measured": [{"batch_size": p["batch_size"], "status": p["status"], "model_bytes": profiler.model_bytes(p),
                                                 **{k: p["peak"][k] for k in PEAK_FACTS if k in p["peak"]}} for p in fitted]}
            render.print_batch_model(prof["batch_model"], console)
            line = prof["batch_model"]
            prof["batch_model"]["confirmed"] = _confirm(config, line["max_batch"], args, memory_bytes, console,
                                                        bytes_per_sample=line["per_sample_bytes"] + line.get("headroom_per_sample_bytes", 0))
    record = _store(store, config, prof, profiles)
    files = prof["files"]
    console.print(f"stored as [bold]{record['id']}[/] in {escape(str(store.home))}; profile {escape(files['json'])}"
                  + (f", plot {escape(files['png'])}" if files["png"] else ""))
    impossible = args.max_batch and not args.confirm_only and over
    return 0 if prof["status"] == "ok" and not impossible else 1


def _confirm(config: RunConfig, predicted: int | None, args, memory_bytes: int | None, console,
             bytes_per_sample: float | None = None) -> dict[str, Any]:
    """Confirm the prediction (None under --confirm-only: the given answers) with real training
    steps (GPU only), under the allocator setting asked for; what was confirmed, or why nothing was.
    `bytes_per_sample` (the fitted line's, with its headroom) lets a failing probe's shortfall set
    the next probe (max_batch.search)."""
    import os

    from tbd import registry
    from tbd.memory import max_batch, render

    if args.no_confirm:
        return {"skipped": "--no-confirm"}
    if config.device != "cuda":
        why = "not confirmed on the CPU: a probe that runs out of host memory meets the OOM killer; run on a GPU to confirm"
        console.print(why)
        return {"skipped": why}
    if memory_bytes is not None:
        why = "not confirmed: --memory asks about another device's memory, and probes here measure this GPU's"
        console.print(why)
        return {"skipped": why}
    setting = registry.framework(config.framework).capabilities.allocator_setting if args.expandable_segments else ""
    if args.expandable_segments and not setting:
        raise UsageError(f"--expandable-segments: {config.framework} has no such allocator setting; drop the flag")
    # Each probe's line as it ends (a probe can take minutes): plain text on one unwrapped line,
    # so a log of it reads back with render.read_probe_lines.
    def show(probe: dict[str, Any]) -> None:
        console.print(render.probe_line(probe), markup=False, highlight=False, soft_wrap=True)

    def show_start(batch: int) -> None:
        console.print(render.probe_start_line(batch, datetime.datetime.now(datetime.timezone.utc)), markup=False, highlight=False, soft_wrap=True)

    saved = dict(os.environ)
    if setting:  # the probes' child processes inherit it
        key, _, value = setting.partition("=")
        os.environ[key] = value
    try:
        start = f"batch {predicted}" if predicted is not None else "the given answers"
        console.print(f"confirming with real training steps from {start} (each probe a child process; at most {args.confirm_time:g} s) ...")
        known = {**({args.known_fit: max_batch.FITS} if args.known_fit else {}), **({args.known_oom: max_batch.OOM} if args.known_oom else {})}
        if known:
            told = (f"batch {b} {'trains' if o == max_batch.FITS else 'runs out of memory'}" for b, o in sorted(known.items()))
            console.print("given from an earlier search: " + ", ".join(told))
        result = max_batch.confirm(config, predicted, deadline_s=args.confirm_time, on_probe=show, known=known, on_start=show_start,
                                       bytes_per_sample=bytes_per_sample)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = {**result.to_dict(), "allocator_setting": setting or "framework default"}
    render.print_confirmed(out, console)
    if note := max_batch.fragmentation_note(result.probes, setting):
        out["fragmentation"] = note
        console.print(note)
    return out


def _guarded(fn, *args, **kwargs):
    """Out of memory is a result (status 'oom'); any other failure of the workload is one line."""
    from tbd.errors import RunFailure, TbdError

    try:
        return fn(*args, **kwargs)
    except TbdError:
        raise
    except Exception as exc:
        from tbd.harness.runner import OOM_TEXT

        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        # The host's allocator failing (a batch far too large for a CPU) is not a device's out-of-memory result.
        hint = "; try a smaller --batch-size" if OOM_TEXT.search(str(exc)) else ""
        raise RunFailure(f"the training step failed ({first}); nothing was stored{hint}") from None


def _store(store, config: RunConfig, prof: dict[str, Any], profiles: list[dict[str, Any]]) -> dict[str, Any]:
    """One record per `tbd memory` call, in the same store and schema as measured runs."""
    from tbd.memory import render
    from tbd.memory.profiler import memory_record

    record = memory_record(config, prof)
    folder = store.home / "memory"
    prof["files"] = {"json": str(folder / f"{record['id']}.json"), "png": str(folder / f"{record['id']}.png")}
    try:
        render.save_plot(profiles, folder / f"{record['id']}.png")
    except ImportError:  # matplotlib is the optional 'plot' extra
        prof["files"]["png"] = None
        prof["method"].setdefault("estimated", []).append("no plot: matplotlib is not installed (pip install 'tbd[plot]')")
    render.save_json({**prof, "other_batches": [p for p in profiles if p is not prof]}, folder / f"{record['id']}.json")
    record["memory_profile"] = prof
    store.save(record)
    return record
