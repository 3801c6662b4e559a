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


def test_jax_text_and_speech_batches_take_the_synthetic_buckets(datasets):
    """From disk, JAX batches are padded to the fixed length buckets the synthetic ones use, so
    the jitted step meets no new shapes; the content is the loader's."""
    pytest.importorskip("jax")
    import jax
    import numpy as np

    from tbd import registry
    from tbd.data import recipes
    from tbd.data.base import BatchStream
    from tbd.frameworks.base import BuildContext
    from tbd.workloads.common_jax import length_edges

    cpu = jax.devices("cpu")[0]
    for workload in ("seq2seq", "transformer", "deepspeech2"):
        spec = registry.get_spec(workload)
        hp = dict(spec.flavor("tiny").hparams)
        ds = recipes.open_dataset(spec, datasets[workload], hp, spec.flavor("tiny").batch_size)
        host = ds.batch([ds[k] for k in next(iter(BatchStream(ds)))])
        ctx = BuildContext(hparams=hp, batch_size=spec.flavor("tiny").batch_size, device="cpu", precision="fp32", seed=0, flavor="tiny")
        batch = [np.asarray(x) for x in registry.load_implementation(workload, "jax").from_host(host, ctx, cpu)]
        if workload == "deepspeech2":
            spec_, labels, frames, n_chars = batch
            assert spec_.shape[0] == len(host["frames"]) and spec_.shape[2] >= host["frames"].max()
            np.testing.assert_array_equal(frames, host["frames"])
            assert labels[0, : n_chars[0]].tolist() == host["targets"][: n_chars[0]].tolist()
        else:
            src, tgt_in, tgt_out, src_lens, tgt_lens = batch
            assert src.shape[1] in length_edges(hp["max_len"]) and src.dtype == np.int32
            np.testing.assert_array_equal(src[: len(host["src"]), : host["src"].shape[1]], host["src"])
            np.testing.assert_array_equal(src_lens[: len(host["src"])], host["src_lens"])
