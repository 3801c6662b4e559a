"""seq2seq, transformer and gpt: analytic FLOPs against torch's FlopCounterMode, the synthetic
length model and bucketing, and gpt compiling into one graph.

Run: .venv/bin/python -m pytest -q tests/workloads/test_flops_suite_b.py
"""

from __future__ import annotations

import random
import statistics

import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tbd import registry  # noqa: E402
from tbd.workloads import text_data  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP contention (10x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def counted_train_flops(model, args) -> int:
    """FLOPs of one forward + backward as FlopCounterMode counts them on the CPU. Attention runs
    on the math backend (the counter has no formula for the CPU flash kernel) and oneDNN is off
    so the CPU LSTM runs as the matrix products the counter sees (its fused oneDNN op, like
    cuDNN's on a GPU, is not counted)."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), torch.backends.mkldnn.flags(enabled=False), counter:
        model(*args).backward()
    return counter.get_total_flops()


def ids(vocab, *shape):
    return torch.randint(4, vocab, shape)


@pytest.mark.parametrize("src_len,tgt_len", [(12, 5)])
def test_seq2seq_flops_match_the_counter(src_len, tgt_len):
    from tbd.workloads.seq2seq import spec
    from tbd.workloads.seq2seq.torch_impl import Seq2Seq

    hp = dict(spec.FLAVORS["tiny"].hparams)
    torch.manual_seed(0)
    B = 3
    args = (ids(hp["src_vocab"], B, src_len), torch.full((B,), src_len), ids(hp["tgt_vocab"], B, tgt_len), ids(hp["tgt_vocab"], B, tgt_len))
    analytic = B * 3 * spec.forward_flops(hp, src_len, tgt_len)
    assert counted_train_flops(Seq2Seq(hp), args) == pytest.approx(analytic, rel=0.10)


@pytest.mark.parametrize("src_len,tgt_len", [(7, 9), (16, 11)])
def test_transformer_flops_match_the_counter(src_len, tgt_len):
    from tbd.workloads.transformer import spec
    from tbd.workloads.transformer.torch_impl import Transformer

    hp = dict(spec.FLAVORS["tiny"].hparams)
    torch.manual_seed(0)
    B, V = 3, hp["vocab"]
    args = (ids(V, B, src_len), ids(V, B, tgt_len), ids(V, B, tgt_len))
    analytic = B * 3 * spec.forward_flops(hp, src_len, tgt_len)
    assert counted_train_flops(Transformer(hp), args) == pytest.approx(analytic, rel=0.10)


def test_gpt_flops_match_the_counter():
    from tbd.workloads.gpt import spec
    from tbd.workloads.gpt.torch_impl import GPT

    flavor = spec.FLAVORS["tiny"]
    hp = dict(flavor.hparams)
    torch.manual_seed(0)
    B, T = 2, hp["block_size"]
    args = (ids(hp["vocab"], B, T), ids(hp["vocab"], B, T))
    assert counted_train_flops(GPT(hp), args) == pytest.approx(B * spec.SPEC.train_flops_per_sample(flavor), rel=0.10)


def test_gpt_sizes_and_flops_convention():
    from tbd.workloads.gpt import spec

    paper = spec.FLAVORS["paper"].hparams
    # GPT-2 124M: 85M in the blocks' matrices + 38.6M in the tied 50304 x 768 embedding
    assert spec.matmul_params(paper) == 12 * 12 * 768**2 + 50304 * 768
    assert spec.train_flops_per_token(paper) == pytest.approx(6 * 123_568_128 + 12 * 12 * 768 * 1024)
    assert 1.2e9 < spec.matmul_params(spec.FLAVORS["1.3b"].hparams) < 1.4e9
    assert 3.0e8 < spec.matmul_params(spec.FLAVORS["350m"].hparams) < 3.6e8


def test_paper_sizes_match_the_published_models():
    from tbd.workloads.gpt.torch_impl import GPT
    from tbd.workloads.seq2seq.torch_impl import Seq2Seq
    from tbd.workloads.transformer.torch_impl import Transformer

    def params(cls, workload, flavor):
        with torch.device("meta"):  # shapes only: no memory, no initialization work
            return sum(p.numel() for p in cls(registry.get_spec(workload).flavor(flavor).hparams).parameters())

    assert params(GPT, "gpt", "paper") == 124_475_904  # GPT-2 small with the 50304 vocabulary (nanoGPT: 124.48M)
    assert 350e6 < params(GPT, "gpt", "350m") < 360e6
    assert 1.3e9 < params(GPT, "gpt", "1.3b") < 1.35e9
    assert 60e6 < params(Transformer, "transformer", "paper") < 66e6  # base: 65M with its 37k vocabulary
    assert 25e6 < params(Seq2Seq, "seq2seq", "paper") < 30e6


@pytest.mark.parametrize("backend", ["auto", "cudnn"])
def test_gpt_compiles_into_one_graph(backend):
    """fullgraph=True raises on any graph break; the eager backend keeps this a tracing test."""
    from tbd.workloads.gpt import spec
    from tbd.workloads.gpt.torch_impl import GPT

    hp = {**spec.FLAVORS["tiny"].hparams, "layers": 1, "block_size": 16}
    torch._dynamo.reset()
    model = torch.compile(GPT(hp, sdpa_backend=backend), backend="eager", fullgraph=True)
    x = ids(hp["vocab"], 2, 16)
    loss = model(x, x)
    loss.backward()
    assert torch.isfinite(loss)


def test_length_model_is_like_the_corpus_and_reproducible():
    model = text_data.LengthModel.from_hparams(registry.get_spec("seq2seq").flavor("paper").hparams)
    pairs = model.draw_many(random.Random(0), 5000)
    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    assert 17 < statistics.mean(src) < 22 and 20 < statistics.mean(tgt) < 27  # IWSLT15 En-Vi: ~20 / ~24
    assert min(src) >= 2 and max(src + tgt) <= 50
    assert statistics.correlation(src, tgt) > 0.8  # long sentences translate to long sentences
    assert model.draw_many(random.Random(7), 50) == model.draw_many(random.Random(7), 50)


def test_bucketed_batches_pad_little_and_fit_the_token_budget():
    model = text_data.LengthModel.from_hparams(registry.get_spec("transformer").flavor("paper").hparams)
    rng = random.Random(3)
    for _ in range(20):
        batch = text_data.draw_bucketed_batch(rng, model, rng.random(), max_tokens=4096)
        longest = max(max(p) for p in batch)
        assert len(batch) * longest <= 4096 and len(batch) * longest >= 2048
        real = sum(s + t for s, t in batch)
        assert real / (2 * len(batch) * longest) > 0.6  # bucketing: pads are a small part
    fixed = text_data.draw_bucketed_batch(random.Random(1), model, 0.5, batch_size=128)
    assert len(fixed) == 128 and [s for s, _ in fixed] == sorted((s for s, _ in fixed), reverse=True)


def test_synthetic_batches_are_reproducible_and_masked():
    from tbd.config import RunConfig
    from tbd.frameworks import open_session

    config = RunConfig(workload="seq2seq", flavor="tiny", isolate=False).validated()
    a, b = (open_session(config) for _ in range(2))
    src, src_lens, tgt_in, tgt_out, tgt_lens = a.batches[0]
    assert all(torch.equal(x, y) for x, y in zip(a.batches[0], b.batches[0]))
    assert torch.equal((src != 0).sum(1), src_lens) and torch.equal((tgt_out != 0).sum(1), tgt_lens)
    assert a._units[0] == float(src_lens.sum() + tgt_lens.sum())


def test_at_the_longest_inputs_a_token_batch_is_the_same_every_draw():
    # `tbd memory transformer --max-batch` sizes batches this way: every pair at max_len, so a
    # batch of N tokens holds N // max_len pairs whatever the draw (random draws hold many short
    # pairs or few long ones, and memory differs between them).
    spec = registry.get_spec("transformer")
    hparams = spec.flavor("paper").hparams
    model = text_data.LengthModel.from_hparams({**hparams, **spec.longest_inputs(hparams)})
    for seed in range(5):
        batch = text_data.draw_bucketed_batch(random.Random(seed), model, seed / 5, max_tokens=4096)
        assert batch == [(hparams["max_len"], hparams["max_len"])] * (4096 // hparams["max_len"])
