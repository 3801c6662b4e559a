"""Generated datasets in each workload's real format, made once per test session (`tbd data make`'s code)."""

import pytest

from tbd import registry
from tbd.data import recipes

DATA_WORKLOADS = ("resnet50", "faster_rcnn", "seq2seq", "transformer", "gpt", "deepspeech2", "wgan")


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    """workload -> folder of a small dataset made for its tiny flavor."""
    root = tmp_path_factory.mktemp("datasets")
    out = {}
    for name in DATA_WORKLOADS:
        spec = registry.get_spec(name)
        size = 48 if name == "wgan" else 16  # wgan takes n_critic x batch images per step
        out[name] = recipes.make(spec, root / name, size, dict(spec.flavor("tiny").hparams))["path"]
    return out


def tiny(workload: str) -> dict:
    return dict(registry.get_spec(workload).flavor("tiny").hparams)
