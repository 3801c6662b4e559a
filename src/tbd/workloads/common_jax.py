"""JAX helpers shared by the workloads' `jax_impl.py` files: PyTorch-style initialization drawn
in one small program, Zipf-distributed token ids, padded token batches and length buckets.

`tbd run gpt --framework jax --flavor tiny` exercises them. Token ids follow Zipf's law as in
`text_torch.py` (same vocabulary range and special tokens), drawn by inverting the cumulative
distribution: one uniform draw and a binary search per token, instead of a categorical draw
that would materialize (tokens x vocabulary) Gumbel noise.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
import jax
import jax.numpy as jnp

from tbd.workloads.text_data import BOS, EOS, FIRST_WORD, PAD

__all__ = ["BOS", "EOS", "FIRST_WORD", "PAD", "torch_like_init", "zipf_tokens", "padded", "bucket", "leaf_names", "param_count"]

# rule(names, shape) -> (kind, scale): kind "normal" (std scale), "uniform" (+-scale), "zeros",
# "ones" or "const" (every entry = scale).
InitRule = Callable[[tuple[str, ...], tuple[int, ...]], tuple[str, float]]


def leaf_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_count(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def torch_like_init(shapes, rule: InitRule, rng: jax.Array):
    """fp32 arrays shaped like `shapes` (a pytree of ShapeDtypeStructs), each initialized as
    `rule` says. All random numbers come from one normal and one uniform draw cut into pieces,
    in one jitted program: an eager or jitted `model.init` compiles a random kernel per
    parameter shape, which on a CPU takes longer than compiling the train step."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    plans = [rule(leaf_names(path), tuple(x.shape)) for path, x in leaves]
    shapes_only = [tuple(x.shape) for _, x in leaves]

    def make(key):
        k_normal, k_uniform = jax.random.split(key)
        sizes = {kind: sum(_size(s) for s, (k, _) in zip(shapes_only, plans) if k == kind) for kind in ("normal", "uniform")}
        pools = {
            "normal": jax.random.normal(k_normal, (max(1, sizes["normal"]),), jnp.float32),
            "uniform": jax.random.uniform(k_uniform, (max(1, sizes["uniform"]),), jnp.float32, -1.0, 1.0),
        }
        offsets = {"normal": 0, "uniform": 0}
        out = []
        for shape, (kind, scale) in zip(shapes_only, plans):
            size = _size(shape)
            if kind in pools:
                piece = jax.lax.dynamic_slice_in_dim(pools[kind], offsets[kind], size) if size else jnp.zeros((0,), jnp.float32)
                offsets[kind] += size
                out.append(piece.reshape(shape) * jnp.float32(scale))
            elif kind == "zeros":
                out.append(jnp.zeros(shape, jnp.float32))
            elif kind == "ones":
                out.append(jnp.ones(shape, jnp.float32))
            elif kind == "const":
                out.append(jnp.full(shape, scale, jnp.float32))
            else:
                raise ValueError(f"unknown init kind {kind!r}")
        return jax.tree_util.tree_unflatten(treedef, out)

    return jax.jit(make)(rng)


def zipf_tokens(key: jax.Array, shape: tuple[int, ...], vocab: int, first: int = FIRST_WORD) -> jax.Array:
    """int32 ids in [first, vocab) with P(rank r) proportional to 1/r (as text_torch.zipf_tokens)."""
    ranks = jnp.arange(1, vocab - first + 1, dtype=jnp.float32)
    cdf = jnp.cumsum(1.0 / ranks)
    u = jax.random.uniform(key, shape, jnp.float32) * cdf[-1]
    ids = jnp.searchsorted(cdf, u, side="right")
    return (jnp.minimum(ids, vocab - first - 1) + first).astype(jnp.int32)


def padded(key: jax.Array, lengths: Sequence[int], rows: int, width: int, vocab: int, bos: bool = False, eos: bool = False) -> jax.Array:
    """(rows, width) ids: row i holds lengths[i] Zipf tokens then PAD; rows past len(lengths)
    are all PAD (bucket padding). Optional BOS first / EOS last in each real row."""
    lens = jnp.zeros((rows,), jnp.int32).at[: len(lengths)].set(jnp.asarray(list(lengths), jnp.int32))
    ids = zipf_tokens(key, (rows, width), vocab)
    pos = jnp.arange(width)[None, :]
    if bos:
        ids = jnp.where(pos == 0, BOS, ids)
    if eos:
        ids = jnp.where(pos == lens[:, None] - 1, EOS, ids)
    return jnp.where(pos >= lens[:, None], PAD, ids)


def bucket(value: int, edges: Sequence[int]) -> int:
    """The smallest edge >= value (the last edge if none is): lengths rounded up to a fixed set."""
    i = bisect.bisect_left(list(edges), value)
    return edges[min(i, len(edges) - 1)]


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for s in shape:
        size *= s
    return size
