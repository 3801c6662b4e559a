"""The PyTorch plugin: `tbd run WORKLOAD --framework torch` (the default).

Parts: `session.py` (eager or torch.compile, autocast, channels_last, CUDA-event timing),
`distributed.py` (torchrun process groups, DDP / FSDP2), `trace.py` (torch.profiler),
`memory.py` (the memory profiler), `custom.py` (clock and FLOP counter of a user's step for
`tbd.measure`), `data.py` (DataLoader feeds for `--data`, GPU JPEG decoding). Importing this package imports no torch.
"""

from tbd.frameworks.base import Capabilities, FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="torch",
    title="PyTorch",
    requires=("torch", "torchvision"),
    install="pip install 'tbd[torch]'",
    package="tbd.frameworks.torch",
    libraries=("torch", "torchvision", "triton"),
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
        },
        fused_optimizer="pass fused=True to the optimizer in the workload's torch_impl",
        allocator_setting="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
        flop_counter="torch.utils.flop_counter.FlopCounterMode",
        data_loader="torch.utils.data.DataLoader (worker processes, pinned memory, copies on a side CUDA stream)",
        gpu_decode="torchvision.io.decode_jpeg on CUDA (nvJPEG), batched; random resized crop and flip on the GPU",
    ),
)
