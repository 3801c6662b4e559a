"""The JAX plugin: `tbd run WORKLOAD --framework jax` (Flax models, optax optimizers).

Parts: `session.py` (one jitted, donated train step), `distributed.py` (jax.distributed behind
torchrun, data parallel over a device mesh), `trace.py` (jax.profiler), `memory.py` (XLA's
buffer assignment). Importing this package imports no jax.
"""

from tbd.frameworks.base import Capabilities, FrameworkPlugin

# Values of the options, here so that checking them imports no jax; their users import them.
ATTENTION_IMPLEMENTATIONS = ("auto", "cudnn", "xla")  # workloads/gpt/jax_impl.py
GPT_LOSSES = ("bf16_logits", "fp32_logits", "fused", "chunked", "fused_linear")  # workloads/gpt/jax_impl.py
PRNG_IMPLS = ("threefry", "rbg", "unsafe_rbg")  # session.py

PLUGIN = FrameworkPlugin(
    name="jax",
    title="JAX",
    requires=("jax", "flax", "optax"),
    install="pip install 'tbd[jax]'",
    package="tbd.frameworks.jax",
    libraries=("jax", "jaxlib", "flax", "optax"),
    capabilities=Capabilities(
        data_loader="torch.utils.data.DataLoader (spawned workers) feeding JAX arrays (jax.device_put)",
        precisions=("fp32", "tf32", "bf16"),
        precisions_note="fp16 needs loss scaling, which the JAX plugin does not do",
        always_compiled="XLA jit of the whole train step (always; --compile changes nothing)",
        native_layout="native NHWC (Flax convolutions)",
        parallel=("ddp",),
        trace=True,
        memory_profile=True,
        ncu=True,
        options={
            "attention": "jax.nn.dot_product_attention implementation: auto (cuDNN on a GPU in bf16, else XLA), cudnn, xla",
            "loss": "gpt's cross-entropy: bf16_logits (default: fp32 accumulation of bf16 logits), fp32_logits (logits "
                    "cast to fp32 first), fused (that with a hand-written gradient), chunked (output layer + loss per chunk of tokens, "
                    "recomputed backward), fused_linear (per chunk, gradients in the forward pass)",
            "loss_chunk": "tokens per chunk of gpt's loss=chunked and fused_linear (default 4096)",
            "prng": "random bits of the train step (dropout masks, sampling): threefry (default, JAX's), rbg or unsafe_rbg "
                    "(XLA's RngBitGenerator, cheaper on a GPU); parameters and data keep threefry",
        },
        option_values={"attention": ATTENTION_IMPLEMENTATIONS, "loss": GPT_LOSSES, "prng": PRNG_IMPLS},
    ),
)
