"""The TensorFlow plugin: `tbd run WORKLOAD --framework tf` (TensorFlow 2 with Keras 3 layers).

Parts: `session.py` (one `tf.function` train step, XLA under --compile, Keras mixed-precision
policies, device-synchronized timing), `distributed.py` (MultiWorkerMirroredStrategy behind
torchrun's ranks), `trace.py` (tf.profiler, converted to Chrome-trace JSON for `tbd analyze`),
`memory.py` (allocator peak plus the exact sizes of variables and optimizer slots), `data.py`
(tf.data feeds for `--data`). Importing this package imports no tensorflow.
"""

import os

from tbd.frameworks.base import Capabilities, FrameworkPlugin

# TensorFlow's C++ INFO and WARNING lines (a CPU-feature banner per process) would fill every run's
# output; errors still show. Set here, before a workload's tf_impl imports tensorflow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXECUTION_MODES = ("graph", "eager")  # --option execution=...

PLUGIN = FrameworkPlugin(
    name="tf",
    title="TensorFlow",
    requires=("tensorflow", "keras"),
    install="pip install 'tbd[tf]'",
    package="tbd.frameworks.tf",
    libraries=("tensorflow", "tensorflow-cpu", "keras"),
    capabilities=Capabilities(
        precisions=("fp32", "tf32", "bf16", "fp16"),
        compile="XLA (tf.function(jit_compile=True))",
        # TF's convolutions are NHWC (channels_last) already; on the CPU it has no NCHW kernels.
        native_layout="native NHWC (channels_last, TensorFlow's default data_format)",
        parallel=("ddp",),
        trace=True,
        memory_profile=True,
        options={
            "execution": "graph (default: the step is one tf.function) or eager (op by op, for debugging; --compile needs graph)",
        },
        option_values={"execution": EXECUTION_MODES},
        compile_needs={"execution": "graph"},
        fused_optimizer="run with --compile: XLA fuses the optimizer's per-variable updates",
        allocator_setting="TF_GPU_ALLOCATOR=cuda_malloc_async",
        data_loader="tf.data: tf.numpy_function loading and collating batches, map with num_parallel_calls=--workers "
                    "(threads, in order), prefetch --prefetch; JPEGs decoded on the CPU",
    ),
)
