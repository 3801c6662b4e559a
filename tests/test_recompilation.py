"""The harness reports a step that keeps recompiling: `pytest -q tests/test_recompilation.py`.

A fake session (no framework) exposes `compile_count` / `compile_s` as a compiling plugin does."""

from __future__ import annotations

import dataclasses

import pytest

from tbd.config import RunConfig
from tbd.frameworks.base import SessionInfo, StepTimes
from tbd.harness.measure import derive_metrics, measure
from tbd.registry import get_spec


class CompilingSession:
    def __init__(self, compiles_every_step: bool, pool: int):
        self.info = SessionInfo("cpu", "0")
        self.compile_count, self.compile_s, self.steps, self.pool = 0, 0.0, 0, pool
        self.every = compiles_every_step

    def run_steps(self, n):
        for _ in range(n):
            if self.every or self.steps < self.pool:  # a new shape per step, or one per pool batch
                self.compile_count += 1
                self.compile_s += 0.5
            self.steps += 1
        return StepTimes([0.01] * n, [1.0] * n, [1.0] * n)

    def last_loss(self):
        return 1.0


def _run(every: bool):
    config = RunConfig(workload="resnet50", data_pool=3, max_steps=30, max_time_s=5, isolate=False).validated()
    m = measure(CompilingSession(every, config.data_pool), config)
    return derive_metrics(m, config, get_spec("resnet50"), "cpu", 1)


def test_a_step_compiled_once_per_pool_batch_is_not_flagged():
    metrics, method = _run(every=False)
    assert metrics["compile_count"] == 3 and metrics["compile_s"] == 1.5
    assert metrics["recompiles_after_first_pass"] == 0 and "recompilation_defect" not in method


def test_a_step_that_keeps_recompiling_is_flagged_in_the_record():
    metrics, method = _run(every=True)
    assert metrics["compile_count"] == 30
    assert metrics["recompiles_after_first_pass"] == 27
    assert "recompiles" in method["recompilation_defect"] and "bucket" in method["recompilation_defect"]


def test_sessions_without_a_compile_count_report_none():
    class Plain:  # e.g. PyTorch eager: nothing to compile
        info = SessionInfo("cpu", "0")

        def run_steps(self, n):
            return StepTimes([0.01] * n, [1.0] * n, [1.0] * n)

        def last_loss(self):
            return 1.0

    config = RunConfig(workload="resnet50", max_steps=5, max_time_s=5, isolate=False).validated()
    metrics, method = derive_metrics(measure(Plain(), config), config, get_spec("resnet50"), "cpu", 1)
    assert "compile_count" not in metrics and "recompilation_defect" not in method


def test_a_slow_compile_of_the_second_batch_is_warm_up_not_measurement():
    """JAX's transformer on an H200: batch 2's shape compiled for 36 s after the first step, which
    ate a 12 s budget and was timed as a step. A compiling session's first pass is warm-up."""

    class SlowSecondCompile(CompilingSession):
        def run_steps(self, n):
            times = []
            for _ in range(n):
                times.append(2.0 if self.steps < self.pool else 0.01)  # each pool batch compiles once, slowly
                if self.steps < self.pool:
                    self.compile_count += 1
                self.steps += 1
            return StepTimes(times, [1.0] * n, [1.0] * n)

    config = RunConfig(workload="resnet50", data_pool=2, max_steps=200, max_time_s=1.0, min_window_s=0.2, isolate=False).validated()
    m = measure(SlowSecondCompile(False, config.data_pool), config)
    metrics, method = derive_metrics(m, config, get_spec("resnet50"), "cpu", 1)
    assert metrics["warmup_steps"] >= 2 and metrics["images_per_s"] > 50  # the compiles are not in the median
    assert not method["stop_reason"].startswith("no steady state")


# -- torch.compile: the PyTorch session reports its compilations -------------------------------


def _torch_session(loss, compile_options=None, compile=True, workload="resnet50"):
    pytest.importorskip("torch")
    import torch

    from tbd.frameworks.base import BuildContext
    from tbd.frameworks.torch.session import TorchSession, TorchTask

    torch._dynamo.reset()  # Linear.forward's cache entries from another test count towards the recompile limit
    # 8 steps end each run; the time budget only guards against a hang (a recompiling step takes
    # seconds on a busy 2-core machine, and 5 s once stopped a run after 5 of its 8 steps).
    config = RunConfig(workload=workload, compile=compile, data_pool=2, max_steps=8, max_time_s=120, min_window_s=0.0,
                       isolate=False).validated()
    task = TorchTask(
        model=torch.nn.Linear(4, 1),
        make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.01),
        make_batch=lambda gen, device: (torch.randn(16, 4, generator=gen, device=device),),
        loss=loss,
        compile_options=compile_options or {},
    )
    return config, TorchSession(config, get_spec(workload), task, BuildContext.for_run(config, 16))


def test_torch_compile_reports_its_compilations_and_a_steady_step_is_not_flagged():
    config, session = _torch_session(lambda model, batch: model(batch[0]).square().mean())
    metrics, method = derive_metrics(measure(session, config), config, get_spec("resnet50"), "cpu", 1)
    assert metrics["compile_count"] >= 1 and metrics["compile_s"] > 0  # step 0 compiled the model (and its backward)
    assert metrics["recompiles_after_first_pass"] == 0 and "recompilation_defect" not in method
    assert "compile callbacks" in session.info.method["compile_count"]


def test_torch_eager_reports_no_compile_count():
    config, session = _torch_session(lambda model, batch: model(batch[0]).square().mean(), compile=False)
    session.run_steps(2)
    assert session.compile_count is None and "compile_count" not in session.info.method


def test_a_torch_step_that_recompiles_for_new_shapes_is_flagged():
    """Each call slices the batch to a new number of rows; with static shapes every call
    recompiles (under Dynamo's recompile limit of 8 in these 8 steps)."""
    rows = iter(range(2, 100))
    config, session = _torch_session(lambda model, batch: model(batch[0][: next(rows)]).square().mean(),
                                     compile_options={"dynamic": False})
    metrics, method = derive_metrics(measure(session, config), config, get_spec("resnet50"), "cpu", 1)
    assert metrics["total_steps"] == 8
    assert metrics["recompiles_after_first_pass"] >= 6  # one per step after the pool's two
    assert "recompiles" in method["recompilation_defect"]


def test_deepspeech2_compiles_once_per_frame_edge_on_torch():
    """The padded widths repeat (frame edges), so the pool's batches compile the convolutional
    front end at most once per width, and no step after the first pass compiles."""
    pytest.importorskip("torch")
    from tbd import frameworks
    from tbd.workloads.deepspeech2.data import frame_edges

    config = RunConfig(workload="deepspeech2", compile=True, data_pool=3, isolate=False).validated()
    session = frameworks.open_session(config)
    widths = {int(batch[0].shape[3]) for batch in session.batches}
    assert widths <= set(frame_edges(80))
    session.run_steps(3)
    first_pass = session.compile_count
    assert first_pass >= 1
    session.run_steps(3)
    assert session.compile_count == first_pass
    session.close()


# -- transformer: lengths padded to the length edges, one dynamic graph for every bucket --------


def _transformer_task(flavor: str, data_pool: int = 2, **small):
    """The torch transformer's task with `flavor`'s lengths and batch size and a small model."""
    pytest.importorskip("torch")
    from tbd.frameworks.base import BuildContext
    from tbd.workloads.transformer import torch_impl

    config = RunConfig(workload="transformer", flavor=flavor, isolate=False, data_pool=data_pool).validated()
    ctx = BuildContext.for_run(config, config.batch_size)
    ctx = dataclasses.replace(ctx, hparams={**ctx.hparams, **small})
    return ctx, torch_impl.build(ctx)


def test_transformer_torch_batches_take_a_length_edge_and_count_only_real_tokens():
    """Paper-shaped batches (4096 tokens, lengths up to 256): every batch is its own (pairs,
    length), but the lengths fed to the step are the spec's edges, one for both sides."""
    import torch

    from tbd.workloads.text_host import length_edges

    # a pool of 12: its batches' buckets spread over the length order (tbd.workloads.draws)
    ctx, task = _transformer_task("paper", data_pool=12, d_model=16, ff=32, heads=2, enc_layers=1, dec_layers=1, vocab=64)
    gen = torch.Generator().manual_seed(0)
    edges, widths = length_edges(ctx.hparams["max_len"]), set()
    for _ in range(12):
        src, tgt_in, tgt_out, src_lens, tgt_lens = task.make_batch(gen, torch.device("cpu"))
        assert src.shape == tgt_in.shape == tgt_out.shape and src.shape[0] == len(src_lens) == len(tgt_lens)
        width = src.shape[1]
        assert width in edges and width >= max(int(src_lens.max()), int(tgt_lens.max()))
        assert task.units((src, tgt_in, tgt_out, src_lens, tgt_lens)) == int((src != 0).sum() + (tgt_out != 0).sum())
        widths.add(width)
    assert len(widths) >= 3  # the draws do span several buckets


def test_transformer_padding_to_the_edge_leaves_the_eager_loss_unchanged():
    import torch

    _, task = _transformer_task("tiny")
    gen = torch.Generator().manual_seed(1)
    batch = task.make_batch(gen, torch.device("cpu"))
    longest = int(max(batch[3].max(), batch[4].max()))
    trimmed = (batch[0][:, :longest], batch[1][:, :longest], batch[2][:, :longest], batch[3], batch[4])
    assert batch[0].shape[1] > longest or longest in (8, 16)  # padded past the longest unless it sits on an edge
    task.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.loss(task.model, batch), task.loss(task.model, trimmed), rtol=1e-5, atol=1e-6)


def test_transformer_torch_from_disk_pads_to_the_edge():
    import torch

    from tbd.workloads.transformer import torch_impl

    ctx, _ = _transformer_task("tiny")
    ids = torch.tensor([[5, 6, 7, 2, 0], [5, 6, 2, 0, 0]])
    host = {"src": ids, "tgt_in": ids, "tgt_out": ids, "src_lens": torch.tensor([4, 3]), "tgt_lens": torch.tensor([4, 3])}
    src, tgt_in, tgt_out, src_lens, _ = torch_impl.from_host(host, ctx, torch.device("cpu"))
    assert src.shape == tgt_out.shape == (2, 8) and src[:, 5:].eq(0).all() and src[:, :5].equal(ids)
    assert src_lens.tolist() == [4, 3]


def test_transformer_compiles_once_for_every_bucket_on_torch():
    """Under --compile the batch and length dims are dynamic: the pool's batches (each its own
    number of pairs) compile one graph, and no step after the first pass compiles. Dynamo's
    tracing and AOT autograd (backend aot_eager) decide the guards; inductor's C++ is skipped."""
    import torch

    from tbd.frameworks.torch.session import TorchSession

    torch._dynamo.reset()
    ctx, task = _transformer_task("tiny")
    config = RunConfig(workload="transformer", compile=True, data_pool=4, isolate=False).validated()
    session = TorchSession(config, get_spec("transformer"), dataclasses.replace(task, compile_options={"backend": "aot_eager"}), ctx)
    assert len({tuple(batch[0].shape) for batch in session.batches}) >= 2  # the pool does hold several shapes
    session.run_steps(4)
    first_pass = session.compile_count
    assert 1 <= first_pass <= 2
    session.run_steps(8)
    assert session.compile_count == first_pass
    session.close()


def test_deepspeech2_paper_batches_take_a_frame_edge():
    """Paper-length utterances (1.5-17 s): the widths fed to the compiled front end are the
    spec's frame edges, whatever each batch's longest utterance."""
    import torch

    from tbd.workloads.deepspeech2.data import frame_edges
    from tbd.workloads.deepspeech2.spec import FRAMES_PER_S
    from tbd.workloads.deepspeech2.torch_impl import make_batch_for

    hp = get_spec("deepspeech2").flavor("paper").hparams
    gen = torch.Generator().manual_seed(0)
    edges = frame_edges(int(round(hp["max_s"] * FRAMES_PER_S)))
    for shape_seed in range(6):
        spec, _, frames, _ = make_batch_for({**hp, "freq_bins": 8}, 2, gen, torch.device("cpu"), shape_seed, shape_seed / 6)
        assert spec.shape[3] in edges and spec.shape[3] >= int(frames.max())
        shortest = int(frames.argmin())
        assert spec[shortest, ..., int(frames[shortest]):].eq(0).all()  # silence past its end


def test_deepspeech2_lets_dynamo_compile_every_frame_edge():
    """Static shapes compile once per edge: Dynamo's recompile limit must not send the widths
    past the eighth to eager mode (a run from disk meets all 27 paper edges)."""
    pytest.importorskip("torch")
    import torch

    from tbd.frameworks.base import BuildContext
    from tbd.workloads.deepspeech2 import torch_impl

    config = RunConfig(workload="deepspeech2", isolate=False).validated()
    ctx = BuildContext.for_run(config, 2)
    torch_impl.build(dataclasses.replace(ctx, hparams={**ctx.hparams, "max_s": 17.0}))  # tiny model, paper lengths
    assert torch._dynamo.config.recompile_limit >= len(torch_impl.flavor_edges({"max_s": 17.0})) == 27
