"""GPT (GPT-2 architecture) in JAX: Flax linen, optax AdamW, fused attention.

`tbd run gpt --framework jax --flavor tiny` exercises it on the CPU; `tbd run gpt --framework jax
--device cuda --flavor paper --precision bf16` is the 124M setting of `bench/frameworks_compare_gpu.py`.

The model is the torch implementation's layer for layer (same parameter count): learned
positions, pre-LayerNorm blocks (eps 1e-5, as torch), one QKV product per layer, GELU in its
tanh form, biases, the output projection tied to the token embedding, GPT-2 initialization
(N(0, 0.02), residual projections scaled by 1/sqrt(2 x layers), zero biases). AdamW with
torch's defaults (eps 1e-8) and decay on matrices and embeddings only.

Attention is `jax.nn.dot_product_attention(is_causal=True)`: on a GPU in bf16 its cuDNN
(flash) kernel, elsewhere XLA's own (scores over all keys, masked); the JAX option `attention`
(auto, cudnn, xla) forces one. bf16: activations and matrix products in bf16, parameters and
AdamW state in fp32, the logits upcast to fp32 for the cross-entropy (as torch's autocast).

The JAX option `loss` picks how the same cross-entropy is computed (the same loss, parameters
and model FLOPs; `bench/gpt_jax_variants_gpu.py` times them on a GPU):
- `bf16_logits` (default): the bf16 logits reduced with fp32 accumulation (logsumexp of their
  upcast, the target's logit gathered from the bf16 tensor), so XLA can fuse the cast into the
  reduction; the same values as `fp32_logits` (the upcast is exact), 1.04x its steps on an H200
  (gpt 124M, 16 x 1024, 2026-11-29: MFU 45.2% against 43.5%; docs/frameworks.md);
- `fp32_logits`: the logits cast to fp32, then optax's cross-entropy (the default until then);
- `fused`: the same with a hand-written gradient (softmax - one-hot, computed from the bf16
  logits and the fp32 log-normalizers, written in bf16): no fp32 (B, T, V) tensor is stored;
- `chunked`: the output layer and the cross-entropy per chunk of `loss_chunk` tokens (default
  4096) under `jax.checkpoint` (the chunk's logits recomputed in the backward pass), so the
  full (B, T, V) logits never exist;
- `fused_linear`: chunks too, each chunk's gradients (of the hidden states and of the output
  layer) computed in the forward pass from its logits, which are then dropped (as Liger's fused
  linear cross-entropy): no recomputation, no (B, T, V) tensor.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax import ATTENTION_IMPLEMENTATIONS as ATTENTION
from tbd.frameworks.jax import GPT_LOSSES as LOSSES
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import host_generator, torch_like_init, zipf_tokens
from tbd.workloads.gpt.spec import GPT2_VOCAB

DEFAULT_LOSS_CHUNK = 4096  # tokens per chunk of the `chunked` and `fused_linear` losses


def attention_implementation(option: str, device: str, precision: str) -> str | None:
    """`implementation` for jax.nn.dot_product_attention: cuDNN needs a GPU and 16-bit inputs."""
    if option not in ATTENTION:
        raise UsageError(f"unknown attention '{option}'; valid: {', '.join(ATTENTION)} (--option attention=...)")
    if option == "auto":
        return "cudnn" if device.startswith("cuda") and precision == "bf16" else "xla"
    if option == "cudnn" and not (device.startswith("cuda") and precision == "bf16"):
        raise UsageError("attention=cudnn needs --device cuda --precision bf16; use --option attention=xla")
    return option


class Block(nn.Module):
    d: int
    heads: int
    attention: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x):
        B, T, C = x.shape
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        norm = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        qkv = dense(3 * C, "qkv")(norm("ln1")(x)).reshape(B, T, 3, self.heads, C // self.heads)  # (B, T, 3, nh, hs)
        y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], is_causal=True, implementation=self.attention)
        x = x + dense(C, "proj")(y.reshape(B, T, C))
        return x + dense(C, "fc_proj")(nn.gelu(dense(4 * C, "fc")(norm("ln2")(x)), approximate=True))


class GPT(nn.Module):
    hp: dict
    attention: str | None = "xla"
    dtype: Any = jnp.float32
    # False: return (final hidden states, the fp32 embedding) instead of the logits, for a loss
    # that applies the tied output layer itself (`chunked`, `fused_linear`); the parameters are the same.
    logits: bool = True

    @nn.compact
    def __call__(self, idx):
        hp = self.hp
        T = idx.shape[1]
        wte = self.param("wte", nn.initializers.normal(0.02), (hp["vocab"], hp["d_model"]), jnp.float32)
        wpe = self.param("wpe", nn.initializers.normal(0.02), (hp["block_size"], hp["d_model"]), jnp.float32)
        x = (wte[idx] + wpe[:T]).astype(self.dtype)  # (B, T, C)
        for i in range(hp["layers"]):
            x = Block(hp["d_model"], hp["heads"], self.attention, self.dtype, name=f"block{i}")(x)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name="ln_f")(x)
        if not self.logits:
            return x, wte
        return x @ wte.astype(self.dtype).T  # (B, T, V): the output layer tied to the embedding


# -- the cross-entropy, five ways ----------------------------------------------------------------


def _lse_and_target(logits, targets):
    """(log-normalizer, target's logit) per token in fp32, from logits of any dtype."""
    lse = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0].astype(jnp.float32)
    return lse, target


def _token_losses_bf16(logits, targets):
    """Per-token cross-entropy (fp32) from logits of any dtype, accumulated in fp32."""
    lse, target = _lse_and_target(logits, targets)
    return lse - target


@jax.custom_vjp
def _token_losses_fused(logits, targets):
    return _token_losses_bf16(logits, targets)


def _fused_fwd(logits, targets):
    lse, target = _lse_and_target(logits, targets)
    return lse - target, (logits, lse, targets)


def _logit_grads(logits, lse, targets, scale):
    """d loss_i / d logits_ij = softmax_ij - [j == target_i], times `scale`: one element-wise pass,
    the logits' own dtype in and out, fp32 inside."""
    probs = jnp.exp(logits.astype(jnp.float32) - lse[..., None])
    one_hot = jnp.arange(logits.shape[-1], dtype=targets.dtype) == targets[..., None]
    return ((probs - one_hot) * scale).astype(logits.dtype)


def _fused_bwd(residuals, g):
    logits, lse, targets = residuals
    return _logit_grads(logits, lse, targets, g[..., None]), None


_token_losses_fused.defvjp(_fused_fwd, _fused_bwd)


def _chunk_size(tokens: int, wanted: int) -> int:
    """The largest divisor of `tokens` not above `wanted`: chunks of equal size, no padding."""
    size = max(1, min(wanted, tokens))
    while tokens % size:
        size -= 1
    return size


def chunked_loss(hidden, wte, targets, dtype, chunk: int):
    """Mean cross-entropy of the tied output layer over chunks of `chunk` tokens; each chunk's
    logits live only inside its (checkpointed) step, recomputed for the backward pass."""
    C = hidden.shape[-1]
    h, t = hidden.reshape(-1, C), targets.reshape(-1)
    size = _chunk_size(h.shape[0], chunk)

    @jax.checkpoint
    def one_chunk(h_t):
        h_c, t_c = h_t
        return _token_losses_fused(h_c @ wte.astype(dtype).T, t_c).sum()

    sums = jax.lax.map(one_chunk, (h.reshape(-1, size, C), t.reshape(-1, size)))
    return sums.sum() / h.shape[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def fused_linear_loss(hidden, wte, targets, dtype, chunk: int):
    """Mean cross-entropy of the tied output layer (`hidden` (N, C), `wte` (V, C) fp32). Its
    forward pass computes the gradients too (for training: a loss alone costs them as well)."""
    return _fused_linear_fwd(hidden, wte, targets, dtype, chunk)[0]


def _fused_linear_fwd(hidden, wte, targets, dtype, chunk):
    n, C = hidden.shape
    size = _chunk_size(n, chunk)
    w = wte.astype(dtype)

    def one_chunk(carry, h_t):
        loss_sum, dw = carry
        h_c, t_c = h_t
        logits = h_c @ w.T  # (size, V), dropped after this chunk
        lse, target = _lse_and_target(logits, t_c)
        d_logits = _logit_grads(logits, lse, t_c, 1.0 / n)  # of the mean loss
        dw = dw + jnp.dot(d_logits.T, h_c, preferred_element_type=jnp.float32)
        return (loss_sum + (lse - target).sum(), dw), d_logits @ w

    start = (jnp.zeros((), jnp.float32), jnp.zeros(wte.shape, jnp.float32))
    (loss_sum, dw), dh = jax.lax.scan(one_chunk, start, (hidden.reshape(-1, size, C), targets.reshape(-1, size)))
    return loss_sum / n, (dh.reshape(n, C), dw)


def _fused_linear_bwd(dtype, chunk, residuals, g):
    dh, dw = residuals
    return (dh * g).astype(dh.dtype), dw * g, None


fused_linear_loss.defvjp(_fused_linear_fwd, _fused_linear_bwd)


def loss_function(option: str, chunk: int):
    """(model, params, idx, targets) -> mean cross-entropy, computed the way `option` names."""
    if option not in LOSSES:
        raise UsageError(f"unknown loss '{option}'; valid: {', '.join(LOSSES)} (--option loss=...)")
    if chunk < 1:
        raise UsageError(f"loss_chunk must be a positive number of tokens, not {chunk}; e.g. --option loss_chunk=4096")

    def mean_loss(model, params, idx, targets):
        if option in ("chunked", "fused_linear"):
            hidden, wte = model.clone(logits=False).apply({"params": params}, idx)
            if option == "fused_linear":
                return fused_linear_loss(hidden.reshape(-1, hidden.shape[-1]), wte, targets.reshape(-1), model.dtype, chunk)
            return chunked_loss(hidden, wte, targets, model.dtype, chunk)
        logits = model.apply({"params": params}, idx)
        if option == "fp32_logits":
            return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets).mean()
        token_losses = _token_losses_bf16 if option == "bf16_logits" else _token_losses_fused
        return token_losses(logits, targets).mean()

    return mean_loss


def gpt2_rule(layers: int):
    residual = 0.02 / math.sqrt(2 * layers)

    def rule(names, shape):
        if names[-1] == "bias":
            return "zeros", 0.0
        if names[-1] == "scale":  # LayerNorm
            return "ones", 1.0
        if names[-2:-1] in (("proj",), ("fc_proj",)):
            return "normal", residual
        return "normal", 0.02

    return rule


def adamw(hp) -> optax.GradientTransformation:
    """torch.optim.AdamW: decoupled decay lr x wd x p, on matrices and embeddings only."""
    b1, b2 = hp["betas"]
    decay = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.adamw(hp["lr"], b1=b1, b2=b2, eps=1e-8, weight_decay=hp["weight_decay"], mask=decay)


def from_host(host: dict, ctx: BuildContext, device):
    """Windows of T + 1 tokens from a token file: inputs the first T, targets the last T (int32)."""
    stream = host["tokens"].astype("int32")
    return jax.device_put((stream[:, :-1], stream[:, 1:]), device)


def build(ctx: BuildContext) -> JaxTask:
    hp = dict(ctx.hparams)
    if hp.get("dropout", 0.0):
        raise UsageError("the JAX gpt has no dropout; use --hparam dropout=0 (every flavor's default)")
    n, T = ctx.batch_size, hp["block_size"]
    model = GPT(hp, attention_implementation(ctx.options.get("attention", "auto"), ctx.device, ctx.precision), compute_dtype(ctx.precision))
    try:
        chunk = int(ctx.options.get("loss_chunk", DEFAULT_LOSS_CHUNK))
    except ValueError:
        raise UsageError(f"loss_chunk must be a number of tokens, not {ctx.options['loss_chunk']!r}; e.g. --option loss_chunk=4096") from None
    mean_loss = loss_function(str(ctx.options.get("loss", LOSSES[0])), chunk)

    def init(rng):
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, T), jnp.int32))
        return torch_like_init(shapes["params"], gpt2_rule(hp["layers"]), rng), {}

    def loss(params, model_state, batch, rng, train=True):
        idx, targets = batch
        return mean_loss(model, params, idx, targets), model_state

    def make_batch(key, device):
        # One stream of T + 1 ids per row (inputs its first T, targets its last T), below
        # GPT-2's 50,257 as in torch: the padding rows of the embedding never occur.
        stream = zipf_tokens(host_generator(key), (n, T + 1), min(hp["vocab"], GPT2_VOCAB), first=0)
        return jax.device_put((stream[:, :-1], stream[:, 1:]), device)

    return JaxTask(init=init, loss=loss, optimizer=adamw(hp), make_batch=make_batch, extra={"model": model})
