"""`hf:MODEL` in PyTorch: a transformers model built from a config (no weights downloaded), its
own LM loss on synthetic token ids, AdamW; FLOPs counted by the session.

Configs: an architecture name (a transformers model type) gives that type's default config; a
few well-known checkpoints map to a model type and the fields that differ from its defaults
(KNOWN below, checked against the published configs); anything else is read from the local
Hugging Face cache only. tbd never downloads: a config it cannot get offline is a UsageError
naming the fix.
"""

from __future__ import annotations

import huggingface_hub.errors
import torch
import transformers
from transformers.models.auto import modeling_auto

from tbd.errors import UsageError, closest, unknown
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.hf.spec import TASKS

# checkpoint -> (model type, fields that differ from that type's default config).
KNOWN: dict[str, tuple[str, dict]] = {
    "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16)),
    "gpt2-large": ("gpt2", dict(n_embd=1280, n_layer=36, n_head=20)),
    "gpt2-xl": ("gpt2", dict(n_embd=1600, n_layer=48, n_head=25)),
    "bert-base-uncased": ("bert", {}),
    "bert-base-cased": ("bert", dict(vocab_size=28996)),
    "bert-large-uncased": ("bert", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    "distilbert-base-uncased": ("distilbert", {}),
    "t5-small": ("t5", {}),
    "t5-base": ("t5", dict(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12)),
    "t5-large": ("t5", dict(d_model=1024, d_ff=4096, num_layers=24, num_decoder_layers=24, num_heads=16)),
}
# The organisations the Hub now files these checkpoints under (openai-community/gpt2, ...).
ORGS = ("openai-community/", "google-bert/", "google-t5/", "distilbert/")
DEFAULT_MAX_POSITIONS = 512
MAX_DEFAULT_SEQ = 1024
MASKED_FRACTION = 0.15  # BERT's share of predicted positions
MIN_CAUSAL_SEQ = 2  # a causal LM shifts its labels by one: one token leaves nothing to predict (a nan loss)
# transformers 5 checks a field's type when it is set (huggingface_hub's strict dataclasses); 4.x sets anything.
FIELD_REJECTED = (TypeError, ValueError, getattr(huggingface_hub.errors, "StrictDataclassError", TypeError))
# Words of the config fields that count or measure something (n_layer, num_attention_heads, hidden_size,
# d_model, max_position_embeddings): such a field must stay a positive integer, which configs do not check.
SIZE_WORDS = frozenset({"layer", "layers", "head", "heads", "embd", "dim", "size", "positions", "embeddings", "model", "ff", "kv",
                        "inner", "ctx", "buckets"})


def model_config(hp):
    """The transformers config of MODEL with the --hf-config overrides applied."""
    name = hp["model"]
    bare = next((name[len(o):] for o in ORGS if name.startswith(o)), name)
    if bare in transformers.CONFIG_MAPPING:
        config = transformers.AutoConfig.for_model(bare)
    elif bare in KNOWN:
        model_type, fields = KNOWN[bare]
        config = transformers.AutoConfig.for_model(model_type, **fields)
    else:
        try:
            config = transformers.AutoConfig.from_pretrained(name, local_files_only=True)
        except (OSError, ValueError):
            near = closest(bare, [*transformers.CONFIG_MAPPING.keys(), *KNOWN])
            raise UsageError(f"hf:{name}: '{bare}'{near} is neither an architecture nor a checkpoint tbd knows, and its config is not in the local "
                             f"Hugging Face cache (tbd downloads nothing); name an architecture, e.g. hf:gpt2 --hf-config n_layer=6, "
                             f"or cache its config first: hf download {name} config.json") from None
    for key, value in hp["hf_config"].items():
        if not hasattr(config, key):
            fields = [k for k in config.to_dict() if not k.startswith("_")]
            raise unknown(f"--hf-config field of {type(config).__name__}", key, fields)
        _check_size(config, key, value)
        try:
            setattr(config, key, value)
        except FIELD_REJECTED as exc:
            reason = str(exc).strip().splitlines()[-1].strip()  # strict dataclasses: "TypeError: Field 'n_layer' expected int, ..."
            raise UsageError(f"--hf-config {key}={value!r} is refused by {type(config).__name__}: {reason}; fix --hf-config") from None
    if getattr(config, "is_encoder_decoder", False) and getattr(config, "decoder_start_token_id", None) is None:
        # The decoder's inputs are the labels shifted right behind this token; T5 starts with its
        # pad token, and some default configs leave the field out.
        config.decoder_start_token_id = getattr(config, "pad_token_id", None) or 0
    return config


def _check_size(config, key: str, value) -> None:
    """A size field (its default a positive integer, its name a count or dimension) stays one: a
    negative or zero layer count builds an empty model that fails only mid-run."""
    default = getattr(config, key)
    is_size = (isinstance(default, int) and not isinstance(default, bool) and default > 0
               and not key.endswith("_id") and not SIZE_WORDS.isdisjoint(key.split("_")))
    if is_size and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise UsageError(f"--hf-config {key} of {type(config).__name__} is a size: a positive integer (default {default}), got {value!r}; "
                         f"fix --hf-config")


def task_of(config, task: str) -> str:
    if task not in TASKS:
        raise unknown("hf task", task, TASKS)
    if task != "auto":
        return task
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if config.model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    return "causal"


MODEL_CLASSES = {"causal": transformers.AutoModelForCausalLM, "masked": transformers.AutoModelForMaskedLM,
                 "seq2seq": transformers.AutoModelForSeq2SeqLM}
MAPPINGS = {"causal": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "masked": modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
            "seq2seq": modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}


def max_positions(config) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def seq_len(config, hp) -> int:
    limit = max_positions(config)
    if hp["seq_len"] is None:
        return min(limit or DEFAULT_MAX_POSITIONS, MAX_DEFAULT_SEQ)
    if limit is not None and hp["seq_len"] > limit:
        raise UsageError(f"hf:{hp['model']} has {limit} positions; use --seq-len {limit} or less, or raise them with --hf-config")
    return hp["seq_len"]


def check(config) -> None:
    """Config, task and sequence length resolve offline; checked before a run."""
    hp = config.resolved_hparams()
    if not isinstance(hp["seq_len"], (int, type(None))) or isinstance(hp["seq_len"], bool) or (hp["seq_len"] or 1) < 1:
        raise UsageError(f"seq_len must be a positive integer, got {hp['seq_len']!r}")
    cfg = model_config(hp)
    task = task_of(cfg, hp["task"])
    if cfg.model_type not in MAPPINGS[task]:
        raise UsageError(f"hf:{hp['model']} ({cfg.model_type}) has no {task} LM head in transformers; try another task or model")
    length = seq_len(cfg, hp)
    if task == "causal" and length < MIN_CAUSAL_SEQ:
        raise UsageError(f"--seq-len must be at least {MIN_CAUSAL_SEQ} for hf:{hp['model']}, a causal LM (each token is predicted "
                         f"from the ones before it), got {length}; e.g. --seq-len 64")
    try:  # the model builds from this config: shapes only, on the meta device (no memory, no time)
        with torch.device("meta"):
            MODEL_CLASSES[task].from_config(cfg)
    except (ValueError, TypeError, AttributeError, AssertionError, KeyError) as exc:  # KeyError: an unknown activation name
        overrides = ",".join(f"{k}={v}" for k, v in hp["hf_config"].items())
        reason = f"unknown name {exc}" if isinstance(exc, KeyError) else str(exc).strip().splitlines()[0]
        raise UsageError(f"hf:{hp['model']} does not build{f' with --hf-config {overrides}' if overrides else ''}: "
                         f"{reason}; fix --hf-config") from None


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    config = model_config(hp)
    task = task_of(config, hp["task"])
    model = MODEL_CLASSES[task].from_config(config)
    n, T, vocab = ctx.batch_size, seq_len(config, hp), config.vocab_size
    device_type = "cuda" if ctx.device.startswith("cuda") else "cpu"

    def make_batch(gen: torch.Generator, device: torch.device):
        ids = torch.randint(0, vocab, (n, T), generator=gen, device=device)  # (B, T)
        # (input_ids, labels), each (B, T)
        if task == "causal":  # the model shifts the labels itself
            return (ids, ids)
        if task == "masked":  # loss on a random 15% of positions (-100: ignored)
            chosen = torch.rand(n, T, generator=gen, device=device) < MASKED_FRACTION
            # A row with no chosen position has no loss term; a batch of such rows (short --seq-len) would average to nan.
            chosen[:, 0] |= ~chosen.any(dim=1)
            return (ids, torch.where(chosen, ids, torch.full_like(ids, -100)))
        return (ids, torch.randint(0, vocab, (n, T), generator=gen, device=device))

    tokens = n * T * (2 if task == "seq2seq" else 1)
    kind = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return TorchTask(
        model=model,
        make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], **kind),
        make_batch=make_batch,
        loss=lambda model, batch: model(input_ids=batch[0], labels=batch[1]).loss,
        units=lambda batch: float(tokens),
        count_flops=True,
        extra={"task": task, "seq_len": T, "model_type": config.model_type},
    )
