"""Waiting for input: measured per step, diagnosed as input-bound, with recommendations that
`tbd analyze --verify` can apply (workers, GPU decoding, a lower-resolution copy)."""

from pathlib import Path

import pytest

from tbd.analysis import verify
from tbd.analysis.analyze import facts
from tbd.analysis.diagnose import diagnose
from tbd.analysis.recommend import recommend
from tbd.config import RunConfig
from tbd.harness.measure import Measurement, derive_metrics, input_metrics
from tbd.registry import get_spec


def test_input_metrics_cover_the_steady_window():
    m = Measurement(step_s=[5.0, 0.1, 0.1, 0.1, 0.1], input_wait_s=[4.0, 0.05, 0.05, 0.0, 0.0], input_stall_s=[4.0, 0.04, 0.04, 0.0, 0.0])
    out = input_metrics(m, start=1)  # step 0 (start-up) is not in the steady window
    assert abs(out["input_wait_host_ms_per_step"] - 25.0) < 1e-9 and abs(out["input_wait_host_pct"] - 25.0) < 1e-9
    assert abs(out["input_stall_device_pct"] - 20.0) < 1e-9
    assert input_metrics(Measurement(step_s=[0.1]), 0) == {}  # synthetic data: nothing to wait for


def test_a_run_fed_from_disk_reports_its_wall_clock_rate():
    # Every fourth step waits for a wave of workers: its throughput is units over wall time, not
    # the median step's rate (which would equal synthetic data's and hide the loader).
    step_s = [2.0] + [0.05, 0.05, 0.05, 0.45] * 30
    m = Measurement(step_s=step_s, units=[8.0] * len(step_s), samples=[8.0] * len(step_s),
                    input_wait_s=[0.0] + [0.0, 0.0, 0.0, 0.4] * 30, input_stall_s=[0.0] + [0.0, 0.0, 0.0, 0.4] * 30)
    config = RunConfig(workload="resnet50", flavor="tiny", device="cpu", min_timed_steps=5).validated()
    metrics, method = derive_metrics(m, config, get_spec("resnet50"), "cpu", 1)
    window = sum(step_s[metrics["warmup_steps"]:])
    assert metrics["images_per_s"] == pytest.approx(8.0 * (len(step_s) - metrics["warmup_steps"]) / window)
    assert metrics["images_per_s"] < 0.5 * 8.0 / 0.05
    assert "wall time" in method["throughput"] and "delta method" in method["confidence_interval"]
    synthetic = Measurement(step_s=step_s, units=[8.0] * len(step_s), samples=[8.0] * len(step_s))
    assert derive_metrics(synthetic, config, get_spec("resnet50"), "cpu", 1)[0]["images_per_s"] == 8.0 / 0.05


def gpu_record(wait_pct: float, workers: int = 4, decode: str = "cpu") -> dict:
    return {
        "id": "r1", "status": "ok",
        "config": {"workload": "resnet50", "framework": "torch", "flavor": "paper", "device": "cuda", "precision": "bf16", "batch_size": 256,
                   "data": "/data/imagenet", "workers": workers, "decode": decode, "prefetch": 2, "max_steps": 300},
        "metrics": {"samples_per_s": 1500.0, "input_stall_device_pct": wait_pct, "input_wait_host_pct": wait_pct + 2,
                    "input_stall_device_ms_per_step": wait_pct * 1.7, "data_skipped_samples": 1},
        "method": {"data": {"source": "dataset on disk", "format": "imagenet", "mean_pixels": 500 * 375, "image_size": 224}},
        "environment": {"cpu_cores": 16}, "memory": {},
    }


def test_waiting_for_input_is_diagnosed_with_levers_to_verify():
    f = facts(gpu_record(45.0), None, {}, None)
    assert f["input_wait_pct"] == 45.0  # the device-side stall, measured at every step
    d = diagnose(f)
    assert d["class"] == "input-bound" and "idle waiting for the next batch" in d["evidence"]
    assert any("corrupt sample" in n for n in d["notes"])
    recs = {r["action"]: r for r in recommend(f)}
    workers = recs["more loader workers (4 -> 8)"]
    assert workers["apply"] == {"workers": 8} and workers["expected_gain_pct"] > 0
    assert recs["decode JPEGs on the GPU"]["apply"] == {"decode": "gpu"}
    assert recs["store the images at a shorter side of 256 px"]["apply"] == {"data_resize": 256}
    picked = verify.pick(recommend(f), None)
    assert {tuple(r["apply"]) for r in picked} >= {("workers",), ("decode",), ("data_resize",)}


def test_no_input_levers_when_the_loader_keeps_up():
    f = facts(gpu_record(1.0, workers=15, decode="gpu"), None, {}, None)
    assert diagnose(f)["class"] != "input-bound"
    assert not [r for r in recommend(f) if "loader" in r["action"] or "decode" in r["action"]]


def test_verify_measures_a_lower_resolution_copy(datasets, tmp_path, monkeypatch):
    """--verify of 'store the images smaller' reruns on a resized copy kept in the store."""
    from PIL import Image

    record = gpu_record(45.0)
    record["config"].update(data=datasets["resnet50"], batch_size=4, flavor="tiny", device="cpu", precision="fp32", max_steps=2)
    launched = []

    def fake_launch(config, progress=None):
        launched.append(config)
        return {"id": "r2", "status": "ok", "metrics": {"samples_per_s": 2000.0}}

    monkeypatch.setattr(verify, "launch", fake_launch)
    monkeypatch.setattr(verify.RunConfig, "validated", lambda self: self)
    store = type("Store", (), {"home": tmp_path, "save": lambda self, r: None})()
    rec = {"action": "store the images at a shorter side of 24 px", "apply": {"data_resize": 24}, "expected_gain_pct": 30.0}
    out = verify._verify_one(record, rec, store, None)
    copy = Path(launched[0].data)
    assert copy.parent == tmp_path / "datasets" and "24 px" in out["note"]
    sizes = [Image.open(p).size for p in copy.rglob("*.JPEG")]
    assert sizes and all(min(s) <= 24 for s in sizes)
    assert abs(out["measured_gain_pct"] - (2000 / 1500 - 1) * 100) < 1e-6
