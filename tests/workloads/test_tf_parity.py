"""The TensorFlow implementations are the PyTorch ones: `pytest -q -m tf tests/workloads/test_tf_parity.py`.

Per workload and flavor: the trainable parameters of the Keras model equal the parameters of
the PyTorch model (built on the meta device), so the two train the same architecture; where a
layer differs in its parameters the implementation says so and the test says by how much.
Run in the TF leg (`make test-tf`); it needs torch for the reference counts.
"""

from __future__ import annotations

import pytest

from tests.conftest import require_tf

pytestmark = pytest.mark.tf
tf = require_tf()
torch = pytest.importorskip("torch")

from tbd import registry  # noqa: E402
from tbd.workloads.common_tf import param_count  # noqa: E402


def _hp(workload: str, flavor: str) -> dict:
    return dict(registry.get_spec(workload).flavor(flavor).hparams)


def _torch_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _fresh_keras():
    yield
    import keras

    keras.backend.clear_session()


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_resnet50_parameter_counts_equal(flavor):
    import torchvision

    from tbd.workloads.resnet50 import tf_impl

    hp = _hp("resnet50", flavor)
    with torch.device("meta"):
        expected = _torch_params(torchvision.models.resnet50(num_classes=hp["num_classes"]))
    assert param_count(tf_impl.resnet50(hp["image_size"], hp["num_classes"])) == expected
    if flavor == "paper":
        assert expected == 25_557_032  # torchvision's, not keras.applications' 25,636,712 (biased convolutions)


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_inception_v3_parameter_counts_equal(flavor):
    from tbd.workloads.inception_v3 import tf_impl, torch_impl

    hp = _hp("inception_v3", flavor)
    with torch.device("meta"):
        expected = _torch_params(torch_impl.make_model(hp["num_classes"]))
    assert param_count(tf_impl.inception_v3(hp["image_size"], hp["num_classes"])) == expected
    if flavor == "paper":
        assert expected == 23_834_568


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_gpt_parameter_counts_equal(flavor):
    import numpy as np

    from tbd.workloads.gpt import tf_impl, torch_impl

    hp = _hp("gpt", flavor)
    with torch.device("meta"):
        expected = _torch_params(torch_impl.GPT(hp))
    model = tf_impl.GPT(hp)
    model(np.zeros((1, 1), np.int32))
    assert param_count(model) == expected
    if flavor == "paper":
        assert expected == 124_475_904


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_transformer_parameter_counts_equal(flavor):
    import numpy as np

    from tbd.workloads.transformer import tf_impl, torch_impl

    hp = _hp("transformer", flavor)
    with torch.device("meta"):
        expected = _torch_params(torch_impl.Transformer(hp))
    model = tf_impl.Transformer(hp)
    ids = np.full((1, 2), 4, np.int32)
    model(ids, ids)
    assert param_count(model) == expected


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_wgan_parameter_counts_equal(flavor):
    import numpy as np

    from tbd.workloads.wgan import tf_impl, torch_impl

    hp = _hp("wgan", flavor)
    with torch.device("meta"):
        expected = _torch_params(torch_impl.WGAN(hp))
    model = tf_impl.WGAN(hp)
    model.generator(np.zeros((1, hp["noise_dim"]), np.float32))
    model.critic(np.zeros((1, hp["image_size"], hp["image_size"], 3), np.float32))
    assert param_count(model) == expected
