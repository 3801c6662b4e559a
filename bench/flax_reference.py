"""Plain Flax/optax training loops of ResNet-50 and GPT-124M: the reference tbd's JAX numbers are
held to, as timm's loop is for PyTorch (bench/resnet50_gpu.py). No tbd harness: a model, an
optax optimizer, one `jax.jit` train step with the state donated, synthetic batches on the
device, timed over steady windows with `block_until_ready`.

    PYTHONPATH=src python3 bench/flax_reference.py --model resnet50 --batch 256   # on a GPU
    PYTHONPATH=src python3 bench/flax_reference.py --model gpt --batch 16         # 16 x 1024 tokens
    PYTHONPATH=src python3 bench/flax_reference.py --model gpt --quick            # tiny sizes on the CPU

`bench/frameworks_compare_gpu.py` imports `run_reference` and measures it in the same call as
tbd's JAX run of the same workload and batch, on the same GPU, and prints the ratio.

The models are what a Flax user writes for these two, sized to tbd's:
- ResNet-50 v1.5 (stride in the 3x3 convolution, projection shortcuts, no convolution biases,
  BatchNorm momentum 0.9 / eps 1e-5, a biased classifier): 25,557,032 parameters at 1000
  classes. NHWC; activations and convolutions in bf16, parameters and BatchNorm statistics
  fp32; SGD lr 0.1, momentum 0.9, weight decay 1e-4 (optax: decay added to the gradient, then
  momentum, as torch.optim.SGD and tbd's JAX resnet50).
- GPT-2 124M (12 layers, d 768, 12 heads, 1024 positions, vocabulary padded to 50,304, the
  output layer tied to the token embedding, GELU in its tanh form): attention through
  `jax.nn.dot_product_attention(is_causal=True)` with cuDNN's fused kernel on a GPU in bf16;
  AdamW lr 6e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices and embeddings.
Timing: the first call (compilation) and `warmup` more steps are excluded; then `windows`
windows of the same number of steps (each at least `window_s` long), each between two
`block_until_ready`s on the whole state; the throughput is the median window's. One more window
waits for every step (`synced_per_step_throughput`), as tbd's JAX session does to time each
step: the difference is what a host sync per step costs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# The sizes of tbd's `paper` flavors; `--quick` uses tbd's `tiny` ones (tests/bench checks both
# give the parameter counts of tbd's JAX models).
RESNET50 = {"paper": dict(image_size=224, num_classes=1000), "tiny": dict(image_size=32, num_classes=10)}
GPT = {"paper": dict(layers=12, d_model=768, heads=12, block_size=1024, vocab=50304),
       "tiny": dict(layers=2, d_model=64, heads=4, block_size=64, vocab=512)}
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))  # (blocks, bottleneck width) of ResNet-50


# -- ResNet-50 ----------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    width: int
    stride: int
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        y = nn.relu(norm()(conv(self.width, (1, 1))(x)))
        y = nn.relu(norm()(conv(self.width, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)))(y)))
        y = norm()(conv(4 * self.width, (1, 1))(y))
        if x.shape != y.shape:  # first block of a stage: 1x1 projection of the shortcut
            x = norm()(conv(4 * self.width, (1, 1), (self.stride, self.stride))(x))
        return nn.relu(x + y)


class ResNet50(nn.Module):
    num_classes: int
    dtype: Any = jnp.bfloat16

    @nn.compact
    def __call__(self, images, train: bool = True):
        x = images.astype(self.dtype)
        x = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for stage, (blocks, width) in enumerate(STAGES):
            for block in range(blocks):
                x = Bottleneck(width, 2 if stage > 0 and block == 0 else 1, self.dtype)(x, train)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class ImageState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any


def resnet50_parts(batch: int, image_size: int, num_classes: int, dtype):
    """(init_state(key), train_step(state, batch), make_batch(key)): pure functions, for jit."""
    model = ResNet50(num_classes, dtype)
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))

    def init_state(key) -> ImageState:
        variables = model.init(key, jnp.zeros((1, image_size, image_size, 3)), train=False)
        return ImageState(variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def train_step(state: ImageState, batch):
        images, labels = batch

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                          train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return ImageState(optax.apply_updates(state.params, updates), batch_stats, opt_state), loss

    def make_batch(key):
        k_img, k_lab = jax.random.split(key)
        return (jax.random.normal(k_img, (batch, image_size, image_size, 3), jnp.float32),
                jax.random.randint(k_lab, (batch,), 0, num_classes, jnp.int32))

    return init_state, train_step, make_batch


def resnet50_loop(batch: int, image_size: int, num_classes: int, dtype, device) -> "Loop":
    init_state, train_step, make_batch = resnet50_parts(batch, image_size, num_classes, dtype)
    return _loop("resnet50", init_state, train_step, make_batch, device, float(batch), "images")


# -- GPT ----------------------------------------------------------------------------------------


class Block(nn.Module):
    heads: int
    attention: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x):
        B, T, C = x.shape
        dense = partial(nn.Dense, dtype=self.dtype)
        norm = partial(nn.LayerNorm, epsilon=1e-5, dtype=self.dtype)
        q, k, v = jnp.split(dense(3 * C)(norm()(x)).reshape(B, T, 3 * self.heads, C // self.heads), 3, axis=2)
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=self.attention)
        x = x + dense(C)(y.reshape(B, T, C))
        return x + dense(C)(nn.gelu(dense(4 * C)(norm()(x)), approximate=True))


class GPT2(nn.Module):
    layers: int
    d_model: int
    heads: int
    block_size: int
    vocab: int
    attention: str | None
    dtype: Any = jnp.bfloat16

    @nn.compact
    def __call__(self, idx):
        init = nn.initializers.normal(0.02)
        wte = nn.Embed(self.vocab, self.d_model, dtype=self.dtype, embedding_init=init)
        wpe = nn.Embed(self.block_size, self.d_model, dtype=self.dtype, embedding_init=init)
        x = wte(idx) + wpe(jnp.arange(idx.shape[1]))
        for _ in range(self.layers):
            x = Block(self.heads, self.attention, self.dtype)(x)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)(x)
        return wte.attend(x).astype(jnp.float32)  # tied output layer; the loss in fp32


class TextState(NamedTuple):
    params: Any
    opt_state: Any


def gpt_parts(batch: int, layers: int, d_model: int, heads: int, block_size: int, vocab: int, dtype, attention: str | None):
    """(init_state(key), train_step(state, batch), make_batch(key)): pure functions, for jit."""
    model = GPT2(layers, d_model, heads, block_size, vocab, attention, dtype)
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)  # noqa: E731
    tx = optax.adamw(6e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=decay_mask)

    def init_state(key) -> TextState:
        params = model.init(key, jnp.zeros((1, block_size), jnp.int32))["params"]
        return TextState(params, tx.init(params))

    def train_step(state: TextState, batch):
        idx, targets = batch

        def loss_fn(params):
            logits = model.apply({"params": params}, idx)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TextState(optax.apply_updates(state.params, updates), opt_state), loss

    def make_batch(key):
        tokens = jax.random.randint(key, (batch, block_size + 1), 0, min(vocab, 50257), jnp.int32)
        return tokens[:, :-1], tokens[:, 1:]

    return init_state, train_step, make_batch


def gpt_loop(batch: int, layers: int, d_model: int, heads: int, block_size: int, vocab: int, dtype, device,
             attention: str | None) -> "Loop":
    init_state, train_step, make_batch = gpt_parts(batch, layers, d_model, heads, block_size, vocab, dtype, attention)
    return _loop("gpt", init_state, train_step, make_batch, device, float(batch * block_size), "tokens")


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Loop:
    name: str
    step: Callable  # jitted (state, batch) -> (state, loss), state donated
    state: Any
    batches: list
    units_per_step: float
    unit: str
    params: int


def _loop(name: str, init_state, train_step, make_batch, device, units_per_step: float, unit: str, pool: int = 2) -> Loop:
    """The state initialized on `device`, `pool` batches resident there (rotated, as tbd's
    default data pool of 2), and the train step jitted with the state donated."""
    with jax.default_device(device):
        state = jax.device_put(jax.jit(init_state)(jax.random.PRNGKey(0)), device)
        batches = [jax.device_put(jax.jit(make_batch)(k), device) for k in jax.random.split(jax.random.PRNGKey(1), pool)]
    return Loop(name, jax.jit(train_step, donate_argnums=0), state, batches, units_per_step, unit, _count(state.params))


def _count(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def time_loop(loop: Loop, warmup: int = 10, window_s: float = 2.0, windows: int = 3, max_window_steps: int = 2000) -> dict[str, Any]:
    """Throughput of `loop`: compile, warm up, then `windows` timed windows of equal length."""
    state, batches = loop.state, loop.batches
    loop.state = None  # donated below: the loop's copy would be a deleted buffer
    t0 = time.perf_counter()
    state, loss = loop.step(state, batches[0])
    jax.block_until_ready((state, loss))
    first_step_s = time.perf_counter() - t0
    first_loss = float(loss)
    t0 = time.perf_counter()
    for i in range(warmup):
        state, loss = loop.step(state, batches[(i + 1) % len(batches)])
    jax.block_until_ready((state, loss))
    step_s = (time.perf_counter() - t0) / max(1, warmup)
    steps = max(5, min(max_window_steps, math.ceil(window_s / max(step_s, 1e-6))))
    rates, seconds = [], []
    for _ in range(windows):
        t0 = time.perf_counter()
        for i in range(steps):
            state, loss = loop.step(state, batches[i % len(batches)])
        jax.block_until_ready((state, loss))
        dt = time.perf_counter() - t0
        seconds.append(dt)
        rates.append(loop.units_per_step * steps / dt)
    # One more window that waits for every step, as tbd's JAX session times each step: what a
    # host sync per step costs this loop (the next step's dispatch is no longer hidden).
    t0 = time.perf_counter()
    for i in range(steps):
        state, loss = loop.step(state, batches[i % len(batches)])
        jax.block_until_ready((state, loss))
    synced = loop.units_per_step * steps / (time.perf_counter() - t0)
    final_loss = float(loss)
    del state
    return {
        "unit": loop.unit,
        "throughput": statistics.median(rates),
        "window_throughputs": rates,
        "spread_pct": 100.0 * (max(rates) - min(rates)) / statistics.median(rates),
        "steps_per_window": steps,
        "synced_per_step_throughput": synced,
        "step_ms": 1e3 * statistics.median(seconds) / steps,
        "first_step_s": first_step_s,
        "first_loss": first_loss,
        "loss": final_loss,
        "loss_finite": math.isfinite(final_loss),
    }


def run_reference(model: str, batch: int | None = None, device: str = "cuda", precision: str = "bf16", quick: bool = False,
                  sizes: dict[str, Any] | None = None, attention: str = "auto", window_s: float = 2.0, windows: int = 3,
                  warmup: int = 10) -> dict[str, Any]:
    """Build and time one reference loop; a JSON-able dict (throughput in `unit`/s, parameters,
    what was run). `sizes` overrides the flavor's sizes (e.g. tbd's hparams of the run it is
    compared with); `quick`: tbd's tiny sizes, a few short windows."""
    platform = "gpu" if device == "cuda" else "cpu"
    dev = jax.devices(platform)[0]
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    flavor = "tiny" if quick else "paper"
    if quick:
        window_s, windows, warmup = min(window_s, 0.3), min(windows, 2), min(warmup, 2)
    matmul = {"bf16": "default", "tf32": "tensorfloat32", "fp32": "highest"}[precision]  # as tbd's JAX session
    with jax.default_matmul_precision(matmul):
        if model == "resnet50":
            hp = {**RESNET50[flavor], **{k: v for k, v in (sizes or {}).items() if k in RESNET50[flavor]}}
            batch = batch or (4 if quick else 256)
            loop = resnet50_loop(batch, hp["image_size"], hp["num_classes"], dtype, dev)
        elif model == "gpt":
            hp = {**GPT[flavor], **{k: v for k, v in (sizes or {}).items() if k in GPT[flavor]}}
            batch = batch or (4 if quick else 16)
            impl = attention_implementation(attention, device, precision)
            hp["attention"] = impl or "xla"
            loop = gpt_loop(batch, hp["layers"], hp["d_model"], hp["heads"], hp["block_size"], hp["vocab"], dtype, dev, impl)
        else:
            raise SystemExit(f"unknown reference model {model!r}; choose resnet50 or gpt")
        params = loop.params
        timing = time_loop(loop, warmup=warmup, window_s=window_s, windows=windows)
    return {"model": model, "batch": batch, "precision": precision, "device": dev.device_kind if platform == "gpu" else "cpu",
            "jax": jax.__version__, "sizes": hp, "params": params, **timing,
            "method": "plain Flax/optax loop (bench/flax_reference.py): jit with the state donated, 2 resident batches rotated, "
                      f"median of {windows} windows between block_until_ready calls after compilation and {warmup} warm-up steps"}


def attention_implementation(option: str, device: str, precision: str) -> str | None:
    """cuDNN's fused attention where it exists (a GPU, 16-bit inputs), else XLA's."""
    if option == "auto":
        return "cudnn" if device == "cuda" and precision in ("bf16", "fp16") else None
    return None if option == "xla" else option


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("resnet50", "gpt"), required=True)
    ap.add_argument("--batch", type=int, help="default: 256 images (resnet50), 16 sequences of 1024 (gpt)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--precision", choices=("bf16", "fp32", "tf32"), default="bf16")
    ap.add_argument("--attention", choices=("auto", "cudnn", "xla"), default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny sizes on the CPU in fp32 (checks the script)")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.device, args.precision = "cpu", "fp32"
    result = run_reference(args.model, args.batch, args.device, args.precision, args.quick, attention=args.attention)
    print(f"plain Flax {result['model']}: batch {result['batch']}, {result['throughput']:,.1f} {result['unit']}/s "
          f"({result['step_ms']:.2f} ms/step, windows within {result['spread_pct']:.2f}%), {result['params']:,} parameters, "
          f"first step {result['first_step_s']:.1f} s, {result['device']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
