"""The PyTorch plugin: `tbd run WORKLOAD --framework torch` (the default).

Parts: `session.py` (eager or torch.compile, autocast, channels_last, CUDA-event timing),
`distributed.py` (torchrun process groups, DDP / FSDP2), `trace.py` (torch.profiler),
`memory.py` (the memory profiler), `custom.py` (clock and FLOP counter of a user's step for
`tbd.measure`), `data.py` (DataLoader feeds for `--data`, GPU JPEG decoding). Importing this package imports no torch.
"""

from tbd.frameworks.base import Capabilities, FrameworkPlugin, Tunable

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZER_KERNELS = ("auto", "fused", "foreach", "for-loop")
SDPA_BACKENDS = ("auto", "cudnn", "flash")  # gpt's attention kernel (workloads/gpt/torch_impl.py)


def _fewer_threads(config) -> tuple[str, ...]:
    """On a CPU: half the usable cores (the default takes them all), where that is a change."""
    from tbd.metrics.conditions import usable_cpus

    half = usable_cpus() // 2
    return (str(half),) if half >= 1 else ()


def _shapes_vary(config, spec) -> bool:
    return bool(spec.variable_shapes)


PLUGIN = FrameworkPlugin(
    name="torch",
    title="PyTorch",
    requires=("torch", "torchvision"),
    install="pip install 'tbd[torch]'",
    package="tbd.frameworks.torch",
    libraries=("torch", "torchvision", "triton"),
    # An environment of another torch (`tbd env create NAME --framework torch==X`) gets the torchvision pip pairs with it.
    env_requirements=("torchvision",),
    capabilities=Capabilities(
        precisions=("fp32", "tf32", "bf16", "fp16"),
        compile="torch.compile",
        channels_last=True,
        parallel=("ddp", "fsdp2"),
        trace=True,
        comm_trace=True,
        memory_profile=True,
        ncu=True,
        options={
            "compile_mode": "torch.compile mode under --compile: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs",
            "sdpa_backend": "attention kernel tried first by scaled_dot_product_attention: auto, cudnn, flash",
            "optimizer": "optimizer update kernels: auto (the workload's choice), fused (one kernel for all parameters), foreach, for-loop",
            "allocator": "CUDA caching allocator: default, or expandable_segments (fewer fragmentation retries at large batches)",
            "cudnn_benchmark": "cuDNN autotuning of convolution algorithms: auto (on unless the workload's shapes vary), on, off",
            "threads": "intra-op threads on a CPU (default: the usable cores shared out between the processes)",
            "layer_norm": "wgan's critic layer norm: group_norm (nn.GroupNorm(1, C)) or ops (the same function as plain tensor ops)",
            "mean_pool": "wgan's critic mean pooling: avg_pool2d (F.avg_pool2d) or reshape (mean over 2x2 windows of a view)",
            "gradient_penalty": "wgan's critic loss: auto (func under --compile on a GPU, else autograd), autograd (penalty by "
                                "autograd.grad, double backward eager) or func (torch.func.grad in one function of the critic's "
                                "parameters, compiled whole under --compile)",
        },
        option_values={
            "compile_mode": COMPILE_MODES,
            "optimizer": OPTIMIZER_KERNELS,
            "sdpa_backend": SDPA_BACKENDS,
            "allocator": ("default", "expandable_segments"),
            "cudnn_benchmark": ("auto", "on", "off"),
            "layer_norm": ("group_norm", "ops"),
            "mean_pool": ("avg_pool2d", "reshape"),
            "gradient_penalty": ("auto", "autograd", "func"),
        },
        tunables=(
            Tunable("optimizer", ("fused", "foreach"), "optimizer kernels"),
            Tunable("compile_mode", ("reduce-overhead", "max-autotune"), "torch.compile mode", devices=("cuda",), needs_compile=True),
            Tunable("cudnn_benchmark", ("on",), "cuDNN autotuning", devices=("cuda",), applies=_shapes_vary),
            Tunable("allocator", ("expandable_segments",), "allocator segments", devices=("cuda",)),
            Tunable("threads", _fewer_threads, "intra-op threads", devices=("cpu",)),
        ),
        fused_optimizer="--option optimizer=fused (fused=True on the workload's optimizers)",
        allocator_setting="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
        fused_optimizer_option={"optimizer": "fused"},
        allocator_option={"allocator": "expandable_segments"},
        flop_counter="torch.utils.flop_counter.FlopCounterMode",
        data_loader="torch.utils.data.DataLoader (worker processes, pinned memory, copies on a side CUDA stream)",
        gpu_decode="torchvision.io.decode_jpeg on CUDA (nvJPEG), batched; random resized crop and flip on the GPU",
    ),
)
