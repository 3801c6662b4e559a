"""JAX helpers shared by the workloads' `jax_impl.py` files: PyTorch-style initialization drawn
in one small program, Zipf-distributed token ids, padded token batches and length buckets.

`tbd run gpt --framework jax --flavor tiny` exercises them. The NumPy token helpers (Zipf ids,
padded rows, length buckets) live in `text_host.py`, shared with TensorFlow; they are drawn on
the host from a generator seeded with the run's key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
import jax
import jax.numpy as jnp
import numpy as np

from tbd.workloads.text_data import BOS, EOS, FIRST_WORD, PAD
from tbd.workloads.text_host import bucket, length_edges, padded, pow2_at_least, zipf_tokens

__all__ = ["BOS", "EOS", "FIRST_WORD", "PAD", "torch_like_init", "host_generator", "zipf_tokens", "padded", "bucket", "length_edges",
           "pow2_at_least", "leaf_names", "param_count"]

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


def host_generator(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key. Synthetic batches are drawn on the host and put on
    the device once: eager JAX ops would compile a kernel for every new batch shape."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist())


def lookup(tree, names: Sequence[str]):
    """The subtree of a nested dict at `names` (a parameter's siblings, for fan-in rules)."""
    for name in names:
        tree = tree[name]
    return tree


def torch_default_rule(shapes) -> InitRule:
    """torch's defaults: nn.Linear and nn.Conv weight and bias U(+-1/sqrt(fan_in)) (kaiming_uniform
    with a = sqrt(5)), norms' scale 1 and bias 0. Flax kernels are (..., in, out): fan-in is the
    product of all but the last dimension; a bias takes its sibling kernel's."""

    def fan_in(shape):
        return max(1, _size(shape[:-1]))

    def rule(names, shape):
        if names[-1] == "kernel":
            return "uniform", 1.0 / math.sqrt(fan_in(shape))
        if names[-1] == "bias":
            sibling = lookup(shapes, names[:-1])
            if "kernel" in sibling:
                return "uniform", 1.0 / math.sqrt(fan_in(tuple(sibling["kernel"].shape)))
            return "zeros", 0.0
        if names[-1] == "scale":
            return "ones", 1.0
        raise ValueError(f"no torch default for parameter {'/'.join(names)}")

    return rule


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for s in shape:
        size *= s
    return size
