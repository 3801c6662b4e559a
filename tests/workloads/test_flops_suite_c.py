"""Analytic FLOPs of deepspeech2 and a3c against torch's FlopCounterMode on tiny configurations.

`pytest -q tests/workloads/test_flops_suite_c.py`. On the CPU a GRU runs as matrix products that
FlopCounterMode sees, so deepspeech2 is counted whole (CTC, batch norm and gate element-wise math
are not counted by either side). a3c is counted over one actor's real rollout: acting forwards
(batch 1) plus the loss's forward and backward over the rollout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tbd.workloads.deepspeech2 import spec as ds2_spec
from tbd.workloads.deepspeech2 import torch_impl as ds2


def _count(fn) -> int:
    # One thread: the counted ops are tiny, and 2 threads on a busy 2-core machine mostly spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.set_num_threads(threads)
    return counter.get_total_flops()


def test_deepspeech2_train_flops_match_flop_counter():
    hp = dict(ds2_spec.FLAVORS["tiny"].hparams)
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(hp["freq_bins"], hp["conv_channels"], hp["hidden"], hp["gru_layers"])
    batch, frames = 2, 80
    spec = torch.randn(batch, 1, hp["freq_bins"], frames)
    lengths = torch.full((batch,), frames)
    targets = torch.randint(1, ds2_spec.NUM_CHARS, (batch * 10,))

    def step():
        log_probs, out_lengths = model(spec, lengths)
        F.ctc_loss(log_probs, targets, out_lengths, torch.full((batch,), 10)).backward()

    counted = _count(step)
    analytic = batch * ds2_spec.train_flops(hp, frames)
    print(f'counted/analytic {counted / analytic:.4f}')
    assert counted == pytest.approx(analytic, rel=0.10), (counted, analytic)


def test_deepspeech2_flops_per_sample_grow_linearly_with_duration():
    hp = ds2_spec.FLAVORS["paper"].hparams
    one, two = ds2_spec.train_flops(hp, 1000), ds2_spec.train_flops(hp, 2000)
    assert two == pytest.approx(2 * one, rel=0.01)
    # The GRU stack dominates, as in DS2 (the convolutions are a few percent).
    parts = ds2_spec.forward_flops(hp, 1000)
    assert parts["gru"] > 0.8 * sum(parts.values())


def test_deepspeech2_data_have_librispeech_like_lengths_and_units():
    hp = ds2_spec.FLAVORS["paper"].hparams
    import numpy as np

    seconds = ds2.sample_durations(np.random.default_rng(0), 20000, hp)
    assert hp["min_s"] <= seconds.min() and seconds.max() <= hp["max_s"]
    assert seconds.mean() == pytest.approx(hp["mean_s"], rel=0.05)
    assert np.median(seconds) > seconds.mean()  # skewed: most utterances are long, a tail is short
    # A bucket holds utterances of similar length, so padding stays small.
    bucket = ds2.bucketed_batch(np.random.default_rng(1), 8, hp, 0.1)  # in the tail of short ones, where lengths spread most
    assert bucket.max() - bucket.min() < 1.0
    tiny = ds2_spec.FLAVORS["tiny"].hparams
    spec, targets, frames, chars = ds2.make_batch_for(tiny, 4, torch.Generator().manual_seed(0), torch.device("cpu"), 0, 0.5)
    # Frames padded to a fixed edge (one compilation per edge under --compile), silence past each end.
    edges = ds2.frame_edges(int(tiny["max_s"] * 100))
    assert spec.shape[:3] == (4, 1, 161) and spec.shape[3] in edges and int(frames.max()) <= spec.shape[3]
    assert float(spec[int(frames.argmin()), 0, :, int(frames.min()):].abs().sum()) == 0.0
    assert int(chars.sum()) == targets.numel() and targets.min() >= 1  # 0 is the CTC blank
    # about 15 characters per second of audio
    assert float(chars.sum()) / (float(frames.sum()) / 100) == pytest.approx(tiny["chars_per_s"], rel=0.2)


def test_a3c_train_flops_match_flop_counter_over_a_real_rollout():
    pytest.importorskip("gymnasium")
    pytest.importorskip("ale_py")
    from tbd.workloads.a3c import spec as a3c_spec
    from tbd.workloads.a3c import torch_impl as a3c

    flavor = a3c_spec.FLAVORS["tiny"]
    hp = dict(flavor.hparams)
    policy = a3c.Policy(hp["num_actions"])
    actor = a3c.Actor(0, hp, seed=0, shared_params=[p.detach() for p in policy.parameters()])
    counted = _count(actor.rollout)
    analytic = hp["t_max"] * a3c_spec.train_flops_per_sample(flavor)
    print(f'counted/analytic {counted / analytic:.4f}')
    assert counted == pytest.approx(analytic, rel=0.10), (counted, analytic)
