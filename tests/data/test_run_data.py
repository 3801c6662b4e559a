"""Training from each format through the framework loaders: PyTorch for every workload with a
dataset, JAX for one; the record carries the loader, the waits and the skipped count."""

import math

import pytest

from tbd import frameworks
from tbd.config import RunConfig
from tests.data.conftest import DATA_WORKLOADS


# resnet50 trains from disk through the whole harness in tests/data/test_bad_data.py (mid-run skip).
@pytest.mark.parametrize("workload", [w for w in DATA_WORKLOADS if w != "resnet50"])
def test_torch_trains_from_disk(datasets, workload):
    # gpt through a worker process (DataLoader's multiprocessing), the others in this process
    workers = 1 if workload == "gpt" else 0
    config = RunConfig(workload=workload, data=datasets[workload], workers=workers, isolate=False).validated()
    session = frameworks.open_session(config)
    try:
        times = session.run_steps(1)
        assert math.isfinite(session.last_loss())
    finally:
        session.close()
    assert len(times.input_wait_s) == 1 and times.input_wait_s[0] >= 0
    data = session.info.method["data"]
    assert data["source"] == "dataset on disk" and f"{workers} worker process" in data["loader"]


def test_jax_trains_from_disk_through_the_torch_loader(datasets):
    pytest.importorskip("jax")
    config = RunConfig(workload="gpt", framework="jax", data=datasets["gpt"], workers=0, isolate=False).validated()
    session = frameworks.open_session(config)
    try:
        times = session.run_steps(2)
        assert math.isfinite(session.last_loss()) and len(times.input_wait_s) == 2
    finally:
        session.close()
    assert "feeding JAX arrays" in session.info.method["data"]["loader"]
