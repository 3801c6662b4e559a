"""TensorFlow trains from each dataset format through tf.data: `pytest -q -m tf tests/data/test_tf_data.py`.

The device batches from disk have the structure (dtypes, ranks) of the workload's synthetic
ones; loading runs in the training thread (--workers 0) and in tf.data's parallel map
(--workers 2); a corrupt file met mid-run is skipped and counted in the record; --decode gpu is
refused with one line.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import require_tf
from tests.data.conftest import DATA_WORKLOADS

pytestmark = pytest.mark.tf
tf = require_tf()

from tbd import frameworks  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.frameworks.tf.data import Layout  # noqa: E402


def test_layout_carries_lists_of_arrays_and_file_names_through_flat_arrays():
    rng = np.random.default_rng(0)
    host = {"labels": np.arange(3), "images": [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((5, 7), (6, 4), (2, 2))],
            "boxes": [np.ones((k, 4), np.float32) for k in (1, 0, 3)], "skipped": ["a.jpg: broken"]}
    layout = Layout(host)
    flat = layout.flatten(host)
    assert len(flat) == len(layout.dtypes) == 6  # labels, images + shapes, boxes + shapes, skipped
    assert flat[2].shape == (3, 6, 7, 3)  # images zero-padded to the largest
    back = layout.unflatten(flat)
    assert back["skipped"] == host["skipped"]
    np.testing.assert_array_equal(back["labels"], host["labels"])
    for key in ("images", "boxes"):
        assert [a.shape for a in back[key]] == [a.shape for a in host[key]]
        assert all(np.array_equal(a, b) for a, b in zip(back[key], host[key]))


def _structure(batch) -> list[tuple[str, int]]:
    return [(tf.as_dtype(np.asarray(x).dtype if isinstance(x, np.ndarray) else x.dtype).name, len(x.shape)) for x in batch]


# Workers alternate so both paths (the training thread, tf.data's parallel map) meet several formats;
# the cheap workloads take more steps (past the first batch, which the feed loaded for its layout).
WORKERS = {"gpt": 0, "seq2seq": 2, "transformer": 0, "deepspeech2": 2, "wgan": 2, "faster_rcnn": 0}
STEPS = {"gpt": 3, "seq2seq": 2}


@pytest.mark.parametrize("workload", [w for w in DATA_WORKLOADS if w != "resnet50"])  # resnet50: the harness test below
def test_tf_trains_from_disk_with_the_synthetic_batch_structure(datasets, workload):
    workers, steps = WORKERS[workload], STEPS.get(workload, 1)
    config = RunConfig(workload=workload, framework="tf", flavor="tiny", data=datasets[workload], workers=workers, prefetch=2,
                       device="cpu", isolate=False).validated()
    session = frameworks.open_session(config)
    try:
        times = session.run_steps(steps)
        assert math.isfinite(session.last_loss())
        fed = session.feed.last
        synthetic = session.task.make_batch(np.random.default_rng(0))
    finally:
        session.close()
    assert _structure(fed) == _structure(synthetic)
    assert len(times.input_wait_s) == steps and all(w >= 0 for w in times.input_wait_s)
    assert all(u > 0 for u in times.units) and all(s > 0 for s in times.samples)
    data = session.info.method["data"]
    assert data["source"] == "dataset on disk" and data["loader"].startswith("tf.data")
    assert f"{workers} loading thread" in data["loader"] and ("num_parallel_calls=2" in data["loader"]) == (workers == 2)


def test_corrupt_image_mid_run_is_skipped_and_counted_through_tf_data(tmp_path, monkeypatch):
    """resnet50 through the harness with 2 loading threads: the record says tf.data and names
    the corrupt file the check's sample missed."""
    from tbd import registry
    from tbd.data import base, recipes
    from tbd.harness.runner import execute

    monkeypatch.setattr(base, "SCAN_SAMPLE", 2)
    root = tmp_path / "images"
    recipes.make(registry.get_spec("resnet50"), root, 8, dict(registry.get_spec("resnet50").flavor("tiny").hparams))
    files = sorted((root / "train").rglob("*.JPEG"), key=lambda p: (p.parent.name, p.name))
    victim = files[sorted(set(range(len(files))) - set(base.spread(len(files))))[0]]
    victim.write_bytes(b"\xff\xd8 broken")
    config = RunConfig(workload="resnet50", framework="tf", flavor="tiny", data=str(root), workers=2, device="cpu",
                       max_steps=3, min_timed_steps=1, isolate=False).validated()
    record = execute(config)
    assert record.status != "failed", record.error  # a loss that is not finite fails the run
    assert record.method["data"]["loader"].startswith("tf.data") and record.method["data"]["format"] == "imagenet"
    assert record.metrics["data_skipped_samples"] >= 1
    assert any(str(victim) in name for name in record.method["data_skipped_files"])
    assert len(record.samples["input_wait_s"]) == len(record.samples["step_s"])


def test_gpu_decoding_is_refused_in_one_line(datasets, capsys):
    from tbd.cli import main

    assert main(["run", "resnet50", "--framework", "tf", "--data", datasets["resnet50"], "--decode", "gpu", "--device", "cpu", "--in-process"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not available for TensorFlow" in err
    assert "drop --decode gpu" in err and "--framework torch" in err
