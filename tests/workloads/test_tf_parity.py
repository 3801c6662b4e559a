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


@pytest.mark.parametrize("flavor", ["tiny"])  # the paper size builds 60M variables for the same layer code (slow in CI)
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


@pytest.mark.parametrize("flavor", ["tiny"])  # the paper networks have the same blocks, more of them
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


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_seq2seq_parameter_counts_differ_by_the_lstm_bias_only(flavor):
    import numpy as np

    from tbd.workloads.seq2seq import tf_impl, torch_impl

    hp = _hp("seq2seq", flavor)
    with torch.device("meta"):
        expected = _torch_params(torch_impl.Seq2Seq(hp))
    model = tf_impl.Seq2Seq(hp, seed=0)
    ids = np.full((1, 2), 4, np.int32)
    model(ids, ids)
    # Keras' LSTM has one bias per layer, torch's (cuDNN's) two that only appear summed.
    assert param_count(model) == expected - hp["layers"] * 4 * hp["hidden"]


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_deepspeech2_parameter_counts_equal(flavor):
    import numpy as np

    from tbd.workloads.deepspeech2 import tf_impl, torch_impl

    hp = _hp("deepspeech2", flavor)
    with torch.device("meta"):
        expected = _torch_params(torch_impl.DeepSpeech2(hp["freq_bins"], hp["conv_channels"], hp["hidden"], hp["gru_layers"]))
    model = tf_impl.DeepSpeech2(hp)
    model(np.zeros((1, hp["freq_bins"], 16, 1), np.float32), np.full((1,), 16, np.int32))
    assert param_count(model) == expected  # Keras' GRU(reset_after=True) keeps both biases, as cuDNN and torch
    if flavor == "paper":
        assert expected == 79_622_333


def test_a3c_policy_parameters_are_torchs_tensor_for_tensor():
    import numpy as np

    from tbd.workloads.a3c import tf_impl, torch_impl
    from tbd.workloads.a3c.spec import SCREEN, STACK

    hp = _hp("a3c", "tiny")
    model = tf_impl.Policy(hp["num_actions"])
    model(np.zeros((1, STACK, SCREEN, SCREEN), np.uint8))
    with torch.device("meta"):
        shapes = [tuple(p.shape) for p in torch_impl.Policy(hp["num_actions"]).parameters()]
    assert [tf_impl.torch_layout(v).shape for v in model.trainable_variables] == shapes  # what the actors read, in order


def test_faster_rcnn_trainable_and_total_parameters_equal():
    import numpy as np

    from tbd.workloads.faster_rcnn import tf_impl, torch_impl

    hp = _hp("faster_rcnn", "tiny")
    model = torch_impl.make_model(hp)  # a real (small) model: torchvision calibrates on it
    trainable, total = sum(p.numel() for p in model.parameters() if p.requires_grad), _torch_params(model)
    task = tf_impl.build(_context("faster_rcnn", hp))
    tf_model = task.model
    frozen_convs = sum(int(np.prod(v.shape)) for v in tf_model.non_trainable_variables if "_bn" not in v.path)
    assert param_count(tf_model) == trainable
    assert param_count(tf_model) + frozen_convs == total  # frozen BatchNorm statistics are buffers in torch


def _context(workload: str, hp: dict):
    from tbd.frameworks.base import BuildContext

    return BuildContext(hparams=hp, batch_size=2, device="cpu", precision="fp32", seed=0, flavor="tiny")
