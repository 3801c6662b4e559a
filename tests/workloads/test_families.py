"""`timm:MODEL` and `hf:MODEL` workloads: random weights, nothing downloaded, FLOPs counted.

Small settings keep them fast on 2 CPU cores: resnet18 on 32x32 images (its convolutions take any
size), GPT-2 shrunk with config overrides (`--hf-config n_layer=2,n_embd=64,n_head=4`).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import statistics

import pytest

from tbd.results.record import MEASURED  # a run with a throughput, converged or not

from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.harness.runner import execute, losses_on_fixed_batch
from tests.conftest import run_cli

# CI installs the extras (tbd[dev] has timm and transformers): there a missing one fails, not skips.
for _module in ("timm", "transformers"):
    importlib.import_module(_module) if os.environ.get("CI") else pytest.importorskip(_module)

TIMM = dict(workload="timm:resnet18", device="cpu", hparams={"image_size": 32, "num_classes": 10}, isolate=False)
GPT2_TINY = {"n_layer": 2, "n_embd": 64, "n_head": 4}
HF = dict(workload="hf:gpt2", device="cpu", hparams={"seq_len": 32, "lr": 1e-2, "hf_config": GPT2_TINY}, isolate=False)


def _falls(losses: list[float], factor: float) -> bool:
    tail = statistics.median(losses[-3:])
    return all(math.isfinite(x) for x in losses) and tail < factor * losses[0]


def test_timm_resnet18_trains_with_counted_flops():
    config = RunConfig(**TIMM, max_steps=5).validated()
    record = execute(config)
    assert record.status in MEASURED, record.error
    m = record.metrics
    assert m["images_per_s"] > 0 and m["total_steps"] == 5
    # resnet18 is ~1.8 GMAC per 224x224 image; at 32x32 (1/49 of the pixels) forward + backward ~ 3 x 2 x 1.8e9 / 49
    assert 0.6 * 3 * 2 * 1.82e9 / 49 < m["model_flops_per_sample"] < 1.4 * 3 * 2 * 1.82e9 / 49
    assert "flop_counter" in record.method["flops"] and "not analytic" in record.method["flops"]
    assert record.workload["num_parameters"] > 11e6
    assert _falls(losses_on_fixed_batch(config, 8), 0.5)


def test_hf_gpt2_trains_with_a_tiny_config():
    config = RunConfig(**HF, max_steps=5).validated()
    record = execute(config)
    assert record.status in MEASURED, record.error
    assert record.metrics["tokens_per_s"] > 0 and record.workload["unit"] == "tokens"
    assert record.metrics["tokens_per_s"] == pytest.approx(32 * record.metrics["samples_per_s"], rel=0.05)
    assert record.workload["hparams"]["hf_config"] == GPT2_TINY
    assert _falls(losses_on_fixed_batch(config, 10), 0.7)


def test_hf_tasks_follow_the_architecture():
    from tbd.workloads.hf import torch_impl

    def task(model, **config):
        hp = {"model": model, "hf_config": config, "seq_len": 16, "task": "auto"}
        return torch_impl.task_of(torch_impl.model_config(hp), "auto")

    assert task("gpt2") == "causal" and task("bert-base-uncased") == "masked" and task("google-t5/t5-small") == "seq2seq"
    base = torch_impl.model_config({"model": "bert-base-uncased", "hf_config": {}})
    assert (base.hidden_size, base.num_hidden_layers, base.vocab_size) == (768, 12, 30522)
    t5 = dict(num_layers=1, num_decoder_layers=1, d_model=32, d_ff=64, num_heads=2)
    record = execute(RunConfig(workload="hf:t5-small", device="cpu", max_steps=3, isolate=False, hparams={"hf_config": t5}).validated())
    assert record.status in MEASURED, record.error
    assert record.metrics["tokens_per_s"] == pytest.approx(2 * 64 * record.metrics["samples_per_s"], rel=0.05)  # source + target
    # A masked LM at one token a sequence: every row still predicts a position (no row without a loss term, no nan).
    bert = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    config = RunConfig(workload="hf:bert", device="cpu", batch_size=1, max_steps=3, isolate=False, hparams={"hf_config": bert, "seq_len": 1})
    record = execute(config.validated())
    assert record.status in MEASURED, record.error


def test_cli_runs_hf_with_its_options_and_rejects_bad_names(tbd_home):
    out = run_cli("run", "hf:gpt2", "--device", "cpu", "--hf-config", "n_layer=2,n_embd=64,n_head=4", "--seq-len", "32", "--max-steps", "4")
    assert out.returncode == 0, out.stderr + out.stdout
    record = json.loads(next((tbd_home / "runs").glob("*.json")).read_text())
    assert record["config"]["hparams"] == {"seq_len": 32, "hf_config": GPT2_TINY} and record["status"] in MEASURED
    bad = run_cli("run", "timm:resnet1", "--device", "cpu")
    assert bad.returncode == 2 and "unknown timm model 'resnet1' (did you mean: resnet18" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("workload,hparams,message", [
    ("hf:not-a-model-anywhere", {}, "tbd downloads nothing"),
    ("hf:gpt2", {"hf_config": {"n_layer": 2, "n_embd": 64}}, "divisible by num_heads"),
    ("hf:gpt2", {"hf_config": {"n_layers": 2}}, "unknown --hf-config field of GPT2Config 'n_layers' (did you mean: n_layer"),
    ("hf:gpt2", {"seq_len": 4096}, "has 1024 positions; use --seq-len 1024 or less"),
    ("hf:gpt2", {"hf_config": {"n_layer": "abc"}}, "--hf-config n_layer of GPT2Config is a size: a positive integer (default 12), got 'abc'"),
    ("hf:gpt2", {"hf_config": {**GPT2_TINY, "n_layer": -1}}, "--hf-config n_layer of GPT2Config is a size: a positive integer"),
    ("hf:gpt2", {"hf_config": {**GPT2_TINY, "n_head": 0}}, "n_head of GPT2Config is a size: a positive integer (default 12), got 0"),
    ("hf:gpt2", {"hf_config": GPT2_TINY, "seq_len": 1}, "--seq-len must be at least 2 for hf:gpt2, a causal LM"),
    ("hf:gpt2", {"hf_config": {"layer_norm_epsilon": "abc"}}, "--hf-config layer_norm_epsilon='abc' is refused by GPT2Config: "),
    ("hf:gpt2", {"hf_config": {**GPT2_TINY, "activation_function": "foo"}}, "unknown name 'foo'; fix --hf-config"),
    ("resnet50", {"seq_len": 32}, "resnet50 has no sequence length to set; --seq-len"),
    ("resnet50", {"hf_config": {"n_layer": 2}}, "resnet50 has no Hugging Face config to set; --hf-config (hf_config) goes with hf:MODEL"),
    ("gpt", {"hf_config": {"n_layer": 2}}, "gpt has no Hugging Face config to set; --hf-config (hf_config) goes with hf:MODEL"),
    ("timm:", {}, "names no model; e.g. timm:resnet18"),
])
def test_bad_model_settings_are_one_line(workload, hparams, message):
    with pytest.raises(UsageError) as err:
        RunConfig(workload=workload, device="cpu", hparams=hparams).validated()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_a_bad_hf_config_value_in_one_line_and_stores_nothing(tbd_home):
    out = run_cli("run", "hf:gpt2", "--device", "cpu", "--hf-config", "n_layer=abc")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "n_layer" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not list(tbd_home.glob("runs/*.json"))


def test_sweeps_take_family_names():
    from tbd.sweep.spec import SweepSpec, parse_text, plan

    lines = plan(SweepSpec(workloads=["timm:resnet18"], devices=["cpu"], batch_sizes=[2, 4])).lines
    assert [(line.base["workload"], line.batches) for line in lines] == [("timm:resnet18", [2, 4])]
    spec = parse_text('workloads = ["hf:gpt2"]\n[batch_sizes]\n"hf:gpt2" = [1, 2]\n', "test.toml")
    assert spec.batch_sizes_per_workload == {"hf:gpt2": [1, 2]}
