"""`hf:MODEL`: a transformers language model from its architecture's default configuration,
random weights, nothing downloaded, trained on synthetic token ids.

MODEL is an architecture (`hf:gpt2`, `hf:bert`, `hf:t5`, `hf:llama`: transformers' default
config of that model type), one of a few well-known checkpoints whose config tbd knows
(`hf:bert-base-uncased`, `hf:t5-small`, `hf:gpt2-medium`, ...), or a checkpoint whose config is
already in the local Hugging Face cache. `--hf-config n_layer=2,n_embd=64` overrides config
fields; `--seq-len` sets the sequence length. The task follows the architecture: seq2seq LM for
encoder-decoders (T5, BART), masked LM for encoders (BERT), causal LM otherwise (GPT-2, Llama);
the hyperparameter `task` (causal, masked, seq2seq) overrides it.

Throughput counts tokens: input tokens for causal and masked LMs, source plus target tokens for
seq2seq. FLOPs are counted by the PyTorch session with `torch.utils.flop_counter` on one step.
"""

from __future__ import annotations

from tbd.workloads.base import Flavor, WorkloadSpec

EXAMPLE = "gpt2"
TASKS = ("auto", "causal", "masked", "seq2seq")


def spec_for(model: str) -> WorkloadSpec:
    def hp(seq_len, lr):
        # seq_len None: the model's maximum positions, at most 1024 (512 where it states none).
        return dict(model=model, seq_len=seq_len, hf_config={}, task="auto", lr=lr, weight_decay=0.01)

    flavors = {
        "tiny": Flavor("tiny", 2, "the configured model, 2 sequences of 64 tokens: a CPU check (shrink it with --hf-config)", hp(64, 1e-3)),
        "paper": Flavor("paper", 8, "the configured model, 8 sequences of its maximum length (at most 1024 tokens)", hp(None, 1e-4)),
    }
    return WorkloadSpec(
        name=f"hf:{model}",
        domain="language modeling",
        dataset="synthetic uniform token ids over the model's vocabulary",
        description=f"transformers' {model} from its default config, random weights, its LM loss, AdamW",
        flavors=flavors,
        sample_unit="sequences",
        unit="tokens",
        batch_unit="sequences",
        units_per_sample=lambda flavor: float(flavor["seq_len"] or 0),  # the session counts each batch's tokens
        train_flops_per_sample=lambda flavor: None,  # counted by the session (flop counter)
        flops_note="counted with torch.utils.flop_counter on one training step (forward + backward), not analytic",
        requires=("transformers",),
        install="pip install 'tbd[hf]'",
    )
