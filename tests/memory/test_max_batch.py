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


def test_search_reports_when_nothing_fits_or_the_bound_fits():
    assert max_batch.search(lambda b: max_batch.OOM, 10).largest_fitting is None
    result = max_batch.search(lambda b: max_batch.FITS, 10, upper=40)
    assert result.largest_fitting == 40 and "upper bound" in result.stopped


def test_search_stops_on_a_failure_that_is_not_memory():
    result = max_batch.search(lambda b: max_batch.FITS if b < 12 else max_batch.ERROR, 10, first_step=0.1)
    assert "other than memory" in result.stopped and result.largest_fitting == 11


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


@pytest.mark.parametrize("argv,message", [
    (["--max-batch", "--memory", "16"], "memory size '16' has no unit; write it like 16GiB"),
    (["--no-confirm"], "go with --max-batch"),
    (["--max-batch", "--fit-batches", "1,2,4"], "trains at batch 2 or more"),
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
