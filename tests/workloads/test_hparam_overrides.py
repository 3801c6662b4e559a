"""Hyperparameter overrides (`--seq-len`, an API's `hparams`) reach the counts of units and FLOPs,
not only the model: a run of gpt at a 32-token context counts 32 tokens a sequence."""

from __future__ import annotations

import pytest

from tbd import registry
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.harness.runner import execute


def test_seq_len_sets_gpts_context_and_its_tokens_and_flops_follow(tbd_home):
    config = RunConfig(workload="gpt", flavor="tiny", device="cpu", hparams={"seq_len": 32}, max_steps=4, isolate=False).validated()
    assert config.hparams == {"block_size": 32} and config.resolved_flavor()["block_size"] == 32
    record = execute(config)
    m = record["metrics"]
    assert m["tokens_per_s"] == pytest.approx(m["samples_per_s"] * 32)
    spec = registry.get_spec("gpt")
    assert m["model_flops_per_sample"] == spec.train_flops_per_sample(config.resolved_flavor())
    assert m["model_flops_per_sample"] < spec.train_flops_per_sample(spec.flavor("tiny"))  # 32 tokens, not the flavor's 64
    assert record["config"]["hparams"]["block_size"] == 32


def test_seq_len_on_a_workload_without_a_sequence_is_refused_in_one_line():
    with pytest.raises(UsageError, match="resnet50 has no sequence length to set; --seq-len"):
        RunConfig(workload="resnet50", device="cpu", hparams={"seq_len": 32}).validated()
