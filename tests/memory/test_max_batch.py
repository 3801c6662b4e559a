"""The confirmed largest batch (tbd.memory.max_batch): the search from a prediction brackets the
real boundary to 2% with few probes, stops on a non-memory failure or at its time limit, and the
probes are short child-process runs of the real configuration."""

import itertools

import pytest

from tbd.config import RunConfig
from tbd.memory import max_batch
from tbd.memory.batch_model import BatchModel
from tbd.memory.profiler import unusable_fit
from tbd.results.record import RunRecord


def boundary(true_max: int, calls: list[int]):
    def probe(batch: int) -> str:
        calls.append(batch)
        return max_batch.FITS if batch <= true_max else max_batch.OOM
    return probe


@pytest.mark.parametrize("true_max,predicted", [(959, 968), (162, 171), (1423, 1498), (100, 50), (5, 4), (1000, 1000)])
def test_search_brackets_the_boundary_within_two_percent(true_max, predicted):
    calls: list[int] = []
    result = max_batch.search(boundary(true_max, calls), predicted, predicted=predicted)
    fits, fails = result.largest_fitting, result.smallest_failing
    assert fits <= true_max < fails  # the confirmed batch really fits; the one above really fails
    assert fails - fits <= max(1, 0.02 * fits)
    assert len(calls) == len(set(calls)) <= 14  # no probe twice
    assert result.prediction_error_pct == pytest.approx((predicted - fits) / fits * 100)
    assert result.stopped == "bracket within 2%"


def test_search_hands_each_probe_on_as_it_ends():
    calls: list[int] = []
    told = []

    def on_probe(probe):
        assert probe["batch_size"] == calls[-1]  # right after its probe, before the next starts
        told.append(probe)

    result = max_batch.search(boundary(162, calls), 171, predicted=171, on_probe=on_probe)
    assert told == result.probes and [p["batch_size"] for p in told] == calls
    assert max_batch.search(boundary(162, []), 171).probes == result.probes  # the same search without it


def test_search_reports_when_nothing_fits_or_the_bound_fits():
    assert max_batch.search(lambda b: max_batch.OOM, 10).largest_fitting is None
    result = max_batch.search(lambda b: max_batch.FITS, 10, upper=40)
    assert result.largest_fitting == 40 and "upper bound" in result.stopped


def test_search_stops_on_a_failure_that_is_not_memory():
    result = max_batch.search(lambda b: max_batch.FITS if b < 12 else max_batch.ERROR, 10, first_step=0.1)
    assert "other than memory" in result.stopped and result.largest_fitting == 11


@pytest.mark.parametrize("known,predicted,first_probe", [
    ({1600: max_batch.FITS}, 1500, 1632),  # 2% above the batch known to train
    ({1600: max_batch.FITS}, 1700, 1700),  # a prediction above it is asked first: a failing probe is cheap
    ({1600: max_batch.FITS}, None, 1632),  # --confirm-only: no prediction
    ({1700: max_batch.OOM}, 1500, 1667),  # 2% below the one known to fail
    ({1700: max_batch.OOM}, 2724, 1667),
    ({1600: max_batch.FITS, 1700: max_batch.OOM}, 2724, 1650),  # the middle of the given bracket
])
def test_search_goes_on_from_an_earlier_searchs_answers_without_asking_again(known, predicted, first_probe):
    calls: list[int] = []
    result = max_batch.search(boundary(1640, calls), predicted or 64, predicted=predicted, known=known)
    assert calls[0] == first_probe and not set(calls) & set(known)  # a given answer is not probed again
    fits, fails = result.largest_fitting, result.smallest_failing
    assert fits <= 1640 < fails and fails - fits <= 0.02 * fits
    assert result.known == known and len(result.probes) == len(calls)
    if predicted:
        assert result.prediction_error_pct == pytest.approx((predicted - fits) / fits * 100)  # still the prediction's error


@pytest.mark.parametrize("fails", [2478, 1700, 131, 51, 3])
def test_a_fit_just_below_a_known_failure_closes_the_bracket_in_one_probe(fails):
    calls: list[int] = []
    result = max_batch.search(boundary(fails - 1, calls), 64, known={fails: max_batch.OOM})
    assert len(calls) == 1 and result.stopped == "bracket within 2%"
    assert result.smallest_failing - result.largest_fitting <= max(1, 0.02 * result.largest_fitting)


def test_search_refuses_answers_that_contradict_each_other():
    with pytest.raises(ValueError, match="give a failing batch above the fitting one"):
        max_batch.search(boundary(10, []), 10, known={20: max_batch.FITS, 15: max_batch.OOM})
    with pytest.raises(ValueError, match="known outcomes"):
        max_batch.search(boundary(10, []), 10, known={20: max_batch.ERROR})


def test_search_is_bounded_by_time_and_says_so():
    ticks = itertools.count(0, 10)  # every clock read is 10 s later
    result = max_batch.search(boundary(500, []), 100, deadline_s=35, clock=lambda: next(ticks))
    assert result.bounded_by_time and "time limit of 35 s" in result.stopped
    assert result.largest_fitting is not None and result.largest_fitting <= 500


def test_a_probe_that_trained_fits_whatever_its_throughput_verdict():
    # Two steps leave one timed step: 'insufficient' for a throughput, but the batch trained.
    config = RunConfig("resnet50", batch_size=8).validated()
    assert max_batch.outcome_of(RunRecord.for_run(config).succeed()) == max_batch.FITS
    insufficient = RunRecord.for_run(config).succeed()
    insufficient.status = "insufficient"
    assert max_batch.outcome_of(insufficient) == max_batch.FITS
    assert max_batch.outcome_of(RunRecord.oom(config, "out of memory")) == max_batch.OOM
    failed = RunRecord.for_run(config)
    failed.fail("error", "shape mismatch")
    assert max_batch.outcome_of(failed) == max_batch.ERROR
    result = max_batch.search(lambda b: (max_batch.ERROR, "shape mismatch") if b > 9 else max_batch.FITS, 10)
    assert "shape mismatch" in result.stopped and result.probes[0]["error"] == "shape mismatch"


def test_confirm_probes_short_child_runs_of_the_same_config():
    config = RunConfig("resnet50", batch_size=8, max_steps=300).validated()
    seen = []

    def launch(cfg):
        seen.append(cfg)
        if cfg.batch_size <= 20:
            record = RunRecord.for_run(cfg)
            return record.succeed()
        return RunRecord.oom(cfg, f"out of memory at batch size {cfg.batch_size}")

    result = max_batch.confirm(config, 24, launch=launch)
    assert (result.largest_fitting, result.predicted) == (20, 24) and result.smallest_failing == 21
    assert all(c.max_steps == 2 and c.isolate and c.workload == "resnet50" for c in seen)



TORCH_OOM = ("OutOfMemoryError: CUDA out of memory. Tried to allocate 32.81 GiB. GPU 0 has a total capacity of "
             "139.81 GiB of which 20.12 GiB is free. Including non-PyTorch memory, this process has 119.68 GiB memory "
             "in use. Of the allocated memory 71.34 GiB is allocated by PyTorch, and 48.34 GiB is reserved by PyTorch "
             "but unallocated. If reserved but unallocated memory is large try setting "
             "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")


@pytest.mark.parametrize("text,summary", [
    (TORCH_OOM, "tried to allocate 32.81 GiB, 20.12 GiB free, 48.34 GiB reserved but unallocated"),
    ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.", "tried to allocate 1073741824 bytes"),
    ("MemoryError: Unable to allocate array", ""),
])
def test_an_out_of_memory_message_is_summed_up_in_its_figures(text, summary):
    assert max_batch.oom_summary(text) == summary


def test_confirm_hands_the_lines_bytes_per_sample_to_the_search():
    """Through the real probe path (a record's PyTorch message, its summary): a failing prediction
    of 30 lacking 10 samples' worth sends the next probe to 20, and 2% above it closes the bracket."""
    config = RunConfig("resnet50", batch_size=8).validated()
    per_sample = 100 * 2**20

    def launch(cfg):
        if cfg.batch_size <= 20:
            return RunRecord.for_run(cfg).succeed()
        lacked_mib = (cfg.batch_size - 20) * 100
        return RunRecord.oom(cfg, f"CUDA out of memory. Tried to allocate {lacked_mib + 1024:.2f} MiB. GPU 0 has a total "
                                  f"capacity of 79.19 GiB of which 1024.00 MiB is free.")

    result = max_batch.confirm(config, 30, launch=launch, bytes_per_sample=per_sample)
    assert [p["batch_size"] for p in result.probes] == [30, 20, 21]
    plain = max_batch.confirm(config, 30, launch=launch)
    assert (plain.largest_fitting, plain.smallest_failing) == (20, 21) and len(plain.probes) > 3


def test_a_failing_probe_says_what_the_allocator_held(monkeypatch):
    """The figures past the message's first 300 characters (fragmentation) come from the traceback."""
    config = RunConfig("resnet50", batch_size=8).validated()

    def launch(cfg):
        if cfg.batch_size <= 20:
            return RunRecord.for_run(cfg).succeed()
        return RunRecord.oom(cfg, f"out of memory at batch size {cfg.batch_size} ({TORCH_OOM[:300]})",
                             traceback=f"Traceback (most recent call last):\n  ...\n{TORCH_OOM}\n")

    result = max_batch.confirm(config, 20, launch=launch)
    failing = [p for p in result.probes if p["outcome"] == max_batch.OOM]
    assert failing and all(p["error"].endswith("48.34 GiB reserved but unallocated") for p in failing)
    assert all("error" not in p for p in result.probes if p["outcome"] == max_batch.FITS)
    # it lacked 12.69 GiB and held 48.34 GiB in pieces: the boundary is fragmentation's
    note = max_batch.fragmentation_note(result.probes, "")
    assert note.startswith("batch 21 lacked 12.7 GiB with 48.3 GiB reserved but unallocated") and "--expandable-segments" in note
    assert max_batch.fragmentation_note(result.probes, "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True") == ""


@pytest.mark.parametrize("summary,fragmented", [
    ("tried to allocate 10.86 GiB, 9.28 GiB free, 10.68 GiB reserved but unallocated", True),  # deepspeech2 bf16, H200
    ("tried to allocate 11.59 GiB, 11.23 GiB free, 107.01 MiB reserved but unallocated", False),  # the same, expandable
    ("tried to allocate 11.59 GiB", False),  # too few figures to tell
])
def test_fragmentation_is_named_only_where_the_pieces_exceed_the_shortfall(summary, fragmented):
    probes = [{"batch_size": 774, "outcome": max_batch.FITS}, {"batch_size": 789, "outcome": max_batch.OOM, "error": summary}]
    assert bool(max_batch.fragmentation_note(probes, "")) is fragmented
    assert max_batch.oom_facts(summary).get("tried") == int(float(summary.split()[3]) * 2**30)

def test_memory_command_prints_each_probe_on_one_line_as_it_ends(monkeypatch, capsys):
    """A log of `tbd memory --max-batch` shows every probe that ended, even where the process is
    killed before the search does (bench/max_batch_gpu.py at its budget); long reasons stay on
    their line, and the lines read back."""
    import dataclasses
    import functools
    from types import SimpleNamespace

    from tbd.commands import memory
    from tbd.memory import render
    from tbd.report.tables import make_console

    def launch(cfg):
        if cfg.batch_size == 24:
            record = RunRecord.for_run(cfg)
            record.fail("error", "CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")
            return record
        return RunRecord.for_run(cfg).succeed() if cfg.batch_size <= 20 else RunRecord.oom(cfg, "out of memory")

    monkeypatch.setattr(max_batch, "confirm", functools.partial(max_batch.confirm, launch=launch))
    monkeypatch.setenv("COLUMNS", "60")  # narrower than the lines: they must not wrap
    # probes run on a GPU only; the config is made on the CPU (no GPU here) and moved
    config = dataclasses.replace(RunConfig("resnet50", batch_size=8).validated(), device="cuda")
    args = SimpleNamespace(no_confirm=False, expandable_segments=False, confirm_time=600.0, known_fit=None, known_oom=None)
    out = memory._confirm(config, 20, args, None, make_console())
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("probe:")]
    assert [line.split(" (")[0] for line in lines] == ["probe: batch 20 fits", "probe: batch 21 out of memory"]
    # each probe's start is printed before it, and a log whose every probe ended has none in flight
    assert [line.split(" (")[0] for line in printed.splitlines() if line.startswith("probing")] == ["probing batch 20", "probing batch 21"]
    assert render.read_probe_in_flight(printed) is None
    cut = printed[:printed.index("probe: batch 21")]  # stopped during the second probe
    assert render.read_probe_in_flight(cut)["batch_size"] == 21
    read = render.read_probe_lines("\n".join(lines))  # seconds as printed: to 0.1 s
    assert [(p["batch_size"], p["outcome"]) for p in read] == [(p["batch_size"], p["outcome"]) for p in out["probes"]]
    assert all(abs(r["seconds"] - p["seconds"]) <= 0.05 for r, p in zip(read, out["probes"]))
    # a reason of several lines is printed on one, after the probe's figures
    memory._confirm(config, 24, args, None, make_console())
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("probe: batch 24")]
    assert len(failed) == 1 and failed[0].startswith("probe: batch 24 failed (")
    assert failed[0].endswith("): CUDA error: an illegal memory access was encountered Compile with TORCH_USE_CUDA_DSA")


def test_a_search_stopped_by_its_time_limit_says_how_to_go_on_from_its_answers(monkeypatch, capsys):
    import dataclasses
    import functools
    from types import SimpleNamespace

    from tbd.commands import memory
    from tbd.report.tables import make_console

    ticks = iter(range(0, 10_000, 50))  # each probe reads the clock twice: 100 s a probe, of a 150 s limit
    monkeypatch.setattr(max_batch, "search", functools.partial(max_batch.search, clock=lambda: next(ticks)))
    launch = lambda cfg: RunRecord.for_run(cfg).succeed() if cfg.batch_size <= 1640 else RunRecord.oom(cfg, "out of memory")  # noqa: E731
    monkeypatch.setattr(max_batch, "confirm", functools.partial(max_batch.confirm, launch=launch))
    config = dataclasses.replace(RunConfig("resnet50", batch_size=8).validated(), device="cuda")
    args = SimpleNamespace(no_confirm=False, expandable_segments=False, confirm_time=150.0, known_fit=1600, known_oom=None)
    memory._confirm(config, 1800, args, None, make_console())
    out = " ".join(capsys.readouterr().out.split())
    assert "time limit of 150 s reached" in out
    assert "to go on from here: the same command with --known-fit 1600 --known-oom 1800 --confirm-only" in out, out


@pytest.mark.parametrize("argv,message", [
    (["--max-batch", "--memory", "16"], "memory size '16' has no unit; write it like 16GiB"),
    (["--no-confirm"], "go with --max-batch"),
    (["--max-batch", "--fit-batches", "1,2,4"], "trains at batch 2 or more"),
    (["--known-fit", "64"], "go with --max-batch"),
    (["--max-batch", "--known-fit", "64", "--known-oom", "32"], "--known-oom 32 is not above --known-fit 64"),
    (["--max-batch", "--confirm-only"], "--confirm-only goes on from an earlier search: give its answers with --known-fit N"),
    (["--max-batch", "--confirm-only", "--known-fit", "64", "--no-confirm"], "drop --no-confirm and --fit-batches"),
    (["--confirm-only", "--known-fit", "64"], "go with --max-batch"),
])
def test_memory_command_refuses_bad_input_in_one_line(tbd_home, capsys, argv, message):
    from tbd import cli

    assert cli.main(["memory", "resnet50", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_line_that_grows_by_the_input_alone_predicts_nothing():
    """resnet50 tiny on the CPU peaks in the optimizer step at batches 2-8: the line grows by the
    input batch only (12 KiB per 32x32 image) and once predicted 1,366,558 images in 16 GiB."""
    image = 32 * 32 * 3 * 4
    profiles = [{"status": "ok", "batch_size": b, "peak": {"categories": {"input_batch": image * b}}} for b in (2, 4, 8)]
    by_input = BatchModel(fixed_bytes=376e6, per_sample_bytes=float(image), points=[(2, 1), (4, 2), (8, 3)], max_residual_pct=0.0)
    assert "no more than one sample's input" in unusable_fit(by_input, profiles)
    with_activations = BatchModel(fixed_bytes=376e6, per_sample_bytes=40.0 * image, points=[(2, 1), (4, 2), (8, 3)], max_residual_pct=1.0)
    assert unusable_fit(with_activations, profiles) is None
    off_the_line = BatchModel(fixed_bytes=376e6, per_sample_bytes=40.0 * image, points=[(2, 1), (4, 2), (8, 3)], max_residual_pct=25.0)
    assert "off the fitted line" in unusable_fit(off_the_line, profiles)


def test_default_fit_batches_are_widened_only_while_their_feature_maps_fit():
    """A line through the input alone asks for batches 4x as large, unless the largest of them,
    at the feature maps a sample costs in the per-layer table, would not fit beside the peak."""
    from tbd.memory.profiler import widened_fit_batches

    image, peak = 32 * 32 * 3 * 4, 376_000_000
    layers = [{"layer": "layer1.0.relu", "type": "ReLU", "bytes": 2 * 2**20 * 8}]  # 2 MiB a sample at batch 8
    profiles = [{"status": "ok", "batch_size": b, "layers": layers if b == 8 else [],
                 "peak": {"categories": {"input_batch": image * b}, "allocated_bytes": peak}} for b in (2, 4, 8)]
    by_input = BatchModel(fixed_bytes=peak, per_sample_bytes=float(image), points=[(2, 1), (4, 2), (8, 3)], max_residual_pct=0.0)
    assert widened_fit_batches(by_input, profiles, [2, 4, 8], budget_bytes=16 * 2**30) == [8, 16, 32]
    assert widened_fit_batches(by_input, profiles, [2, 4, 8], budget_bytes=peak + 32 * 2 * 2**20 - 1) is None  # 32 would not fit
    assert widened_fit_batches(by_input, [{**p, "layers": []} for p in profiles], [2, 4, 8], 16 * 2**30) is None  # cost unknown
    with_activations = BatchModel(fixed_bytes=peak, per_sample_bytes=40.0 * image, points=[(2, 1), (4, 2), (8, 3)], max_residual_pct=1.0)
    assert widened_fit_batches(with_activations, profiles, [2, 4, 8], 16 * 2**30) is None
    assert widened_fit_batches(None, profiles, [2, 4, 8], 16 * 2**30) is None


def test_a_line_through_optimizer_peaks_and_backward_peaks_is_bent_and_widened():
    """resnet50 tiny on the CPU, 2026-12-01: 32 and 64 peak in the optimizer step (flat, 360 MiB),
    128 in the backward pass; the least-squares slope (0.96 MiB) was below the feature maps' 1.7."""
    from tbd.memory.profiler import mixed_peaks, widened_fit_batches

    phases = {32: "optimizer", 64: "optimizer", 128: "backward"}
    profiles = [{"status": "ok", "batch_size": b, "layers": [{"bytes": int(1.7 * 2**20) * b}],
                 "peak": {"phase": phase, "categories": {"input_batch": 12288 * b}, "allocated_bytes": 377_000_000}}
                for b, phase in phases.items()]
    bent = BatchModel(fixed_bytes=330e6, per_sample_bytes=0.96 * 2**20, points=[(32, 377e6), (64, 377.5e6), (128, 467e6)], max_residual_pct=5.0)
    assert "batches 32, 64 lie in the optimizer step" in mixed_peaks(bent, profiles)
    assert widened_fit_batches(bent, profiles, [32, 64, 128], budget_bytes=16 * 2**30) == [128, 256, 512]
    backward = [{**p, "peak": {**p["peak"], "phase": "backward"}} for p in profiles]
    assert mixed_peaks(bent, backward) is None and widened_fit_batches(bent, backward, [32, 64, 128], 16 * 2**30) is None


def test_confirm_only_goes_on_from_the_given_answers_without_a_fit(tbd_home, capsys):
    """`--confirm-only` skips the fit (on a GPU the search then goes on from --known-fit/--known-oom;
    on the CPU nothing is confirmed, and says so) and stores the record without a prediction."""
    import json

    from tbd import cli

    assert cli.main(["memory", "resnet50", "--device", "cpu", "--max-batch", "--confirm-only", "--known-fit", "4", "--home", str(tbd_home)]) == 0
    out = capsys.readouterr().out
    assert "fitting the batch-size model" not in out and "predicted largest batch" not in out
    assert "not confirmed on the CPU" in out
    stored = [json.loads(p.read_text()) for p in (tbd_home / "memory").glob("*.json")]
    assert len(stored) == 1 and stored[0]["batch_model"]["fit_skipped"].startswith("--confirm-only")
