"""GPT (GPT-2 architecture) in PyTorch, written to compile into one graph.

`tbd run gpt --flavor tiny` exercises it on the CPU; `python3 bench/gpt_gpu.py` measures the
124M flavor on a GPU against transformers' GPT2LMHeadModel.

What makes it fast on a GPU:
- the model's forward returns the loss, so under `--compile` the output projection, the fp32
  upcast of the logits and the cross-entropy are one compiled graph: inductor fuses the
  softmax reductions and the backward's softmax-minus-one-hot instead of materializing fp32
  logits and their log-softmax (the largest tensors of the step) in separate kernels;
- no graph breaks (compiled with fullgraph=True, checked by a test): no data-dependent Python
  control flow, positions taken by slicing the table (no host-built tensors), no `.item()`;
- one QKV matrix product per layer and causal attention through
  `F.scaled_dot_product_attention(is_causal=True)` (flash / cuDNN kernels, no mask tensor);
  the torch option `sdpa_backend` (`RunConfig.options`) can force the cuDNN kernel, which is
  faster than flash-attention 2 on Hopper;
- dropout 0 and so no dropout kernels at all (they are left out of the graph, not run at p=0);
- AdamW with `fused=True` on CUDA (one kernel for all parameters; `foreach` on the CPU) and no
  host synchronization anywhere in the step.
"""

from __future__ import annotations

import inspect
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from tbd.errors import unknown
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch import SDPA_BACKENDS
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.gpt.spec import GPT2_VOCAB
from tbd.workloads.text_torch import zipf_tokens

def _attention_context(backend: str):
    """A context manager choosing the SDPA kernel, or None for PyTorch's own choice."""
    if backend == "auto":
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    first = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    order = [first] + [b for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if b != first]
    if "set_priority" in inspect.signature(sdpa_kernel).parameters:  # torch >= 2.6: try in this order
        return lambda: sdpa_kernel(order, set_priority=True)
    return lambda: sdpa_kernel([first])


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, heads: int, dropout: float, attention_context):
        super().__init__()
        self.heads, self.dropout, self.attention_context = heads, dropout, attention_context
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc_proj = nn.Linear(4 * d, d)

    def _drop(self, x):
        return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        if self.attention_context is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            with self.attention_context():
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        x = x + self._drop(self.proj(y))
        return x + self._drop(self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class GPT(nn.Module):
    def __init__(self, hp, sdpa_backend: str = "auto"):
        super().__init__()
        d, layers = hp["d_model"], hp["layers"]
        self.dropout = hp["dropout"]
        context = _attention_context(sdpa_backend)
        self.wte = nn.Embedding(hp["vocab"], d)
        self.wpe = nn.Embedding(hp["block_size"], d)
        self.blocks = nn.ModuleList(Block(d, hp["heads"], hp["dropout"], context) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        # GPT-2 initialization: N(0, 0.02), residual projections scaled by 1/sqrt(2 x layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "fc_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        """idx, targets (B, T) token ids; returns the mean next-token cross-entropy."""
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:T]  # (B, T, C)
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V): output layer tied to the embedding
        # cross_entropy runs in fp32 under autocast; compiled, the upcast fuses into the reduction
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def make_adamw(model: nn.Module, hp, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (and embeddings) only, not on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kind = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=hp["lr"], betas=tuple(hp["betas"]), **kind)


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """Windows of T + 1 tokens from a token file: inputs are the first T, targets the last T."""
    stream = host["tokens"].to(device, non_blocking=True)
    return (stream[:, :-1].contiguous(), stream[:, 1:].contiguous())


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    backend = ctx.options.get("sdpa_backend", "auto")
    if backend not in SDPA_BACKENDS:
        raise unknown("sdpa_backend", backend, SDPA_BACKENDS)
    device_type = "cuda" if ctx.device.startswith("cuda") else "cpu"
    n, T = ctx.batch_size, hp["block_size"]

    def make_batch(gen: torch.Generator, device: torch.device):
        # One stream of T + 1 tokens per row: inputs are its first T, targets its last T. Ids
        # stay below GPT-2's 50,257: the padding rows of the embedding never occur in data.
        stream = zipf_tokens((n, T + 1), min(hp["vocab"], GPT2_VOCAB), gen, device, first=0)
        return (stream[:, :-1].contiguous(), stream[:, 1:].contiguous())

    # One graph or an error: a graph break would silently cost speed. Under torchrun the DDP /
    # FSDP wrappers split the graph at their buckets on purpose, so there it is not demanded.
    options = {"fullgraph": os.environ.get("WORLD_SIZE", "1") == "1"}
    return TorchTask(
        model=GPT(hp, backend),
        make_optimizer=lambda model: make_adamw(model, hp, device_type),
        make_batch=make_batch,
        loss=lambda model, batch: model(*batch),
        compile_options=options,
    )
