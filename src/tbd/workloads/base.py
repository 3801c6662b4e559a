"""The framework-neutral description of a training workload.

A `WorkloadSpec` says what is trained (domain, dataset the synthetic data imitate, flavors with
their hyperparameters), in which unit throughput is counted, and how many FLOPs one training step
costs (an analytic count, so MFU needs no profiler). Framework files build the model from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tbd.errors import unknown


@dataclass(frozen=True)
class Flavor:
    """One size of a workload: `tiny` for smoke tests on a CPU, `paper` for the paper's setting."""

    name: str
    batch_size: int
    description: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    # The smallest batch this flavor trains at, and why where it is more than 1 (checked before a
    # run starts: a batch below it is a one-line error, not a crash inside the model).
    min_batch: int = 1
    min_batch_note: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.hparams[key]


# Where a batch is processes on the host's cores (a3c's actors): past this many a core they
# only take turns, and thousands of them meet the host's process and open-file limits
# (`tbd run a3c --batch-size 100000` ended in "Too many open files").
MAX_HOST_PROCESSES_PER_CORE = 32


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    domain: str
    dataset: str  # the real dataset whose shapes the synthetic data imitate
    description: str
    flavors: Mapping[str, Flavor]
    # Throughput unit: what one sample is ("images") and what users count ("images", "tokens").
    sample_unit: str
    unit: str
    # Units in one sample of a flavor (1 for images; sequence length for language models).
    units_per_sample: Callable[[Flavor], float]
    # Model FLOPs of one training step per sample (forward + backward), analytic; None where
    # there is no analytic count and the framework's session counts them (timm:, hf: models).
    train_flops_per_sample: Callable[[Flavor], float | None]
    flops_note: str = ""
    # The model is built of 2-D convolutions over images (so an NHWC layout can matter).
    convolutional: bool = False
    # Input shapes change from batch to batch (detection images, bucketed sequences); plugins
    # that tune kernels per shape (cuDNN's autotuner) or compile per shape take it into account.
    variable_shapes: bool = False
    # For variable-shape workloads: hyperparameter overrides that make every sample as long as
    # the flavor allows (a function of the flavor's hyperparameters). `tbd memory --max-batch`
    # sizes batches with them, so the figure it confirms trains whatever bucket comes.
    longest_inputs: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    # For variable-shape workloads: how the synthetic batches' lengths are drawn, for the record's
    # method (tbd.workloads.draws.RESIDENT_LENGTHS where the workload draws through that module).
    synthetic_lengths: str = ""
    # What `batch_size` counts, in the words the CLI and reports show: "images", "sentence
    # pairs", "actor processes" (default: the sample unit). Per-rank shares divide it.
    batch_unit: str = ""
    # True where the batch counts processes on the host's CPU cores (a3c's actors): a larger
    # batch then gains at most as much as there are idle cores for it (the analysis's estimate).
    batch_on_host_cores: bool = False
    # True where part of the host's work per step runs once per sample (torchvision's detection
    # heads decode and filter each image's proposals on their own): a larger batch then
    # lengthens the host's step too (the analysis's estimate).
    host_work_per_sample: bool = False
    # True where most of the work is a recurrence over time steps (RNNs: cuDNN's, or a loop of
    # cells). An optional compiler leaves it as it is (torch.compile would compile a graph per
    # sequence length, so the implementations keep the recurrence out), and the fusable kernels
    # by name are mostly in it (the analysis's compile estimate).
    recurrent: bool = False
    # Why some steps take far longer by the nature of the work ("" where none do): a3c's actors
    # end episodes at irregular steps and reset their emulators. Such runs are rated over the
    # window (units / time, which counts the slow steps), not by the median step (which hides them).
    irregular_steps: str = ""
    # Importable modules the workload needs beyond its framework (an environment, a tokenizer),
    # and the pip command that brings them; `registry.check_runnable` checks them without importing.
    requires: tuple[str, ...] = ()
    install: str = ""
    # Precisions the workload can honour (None: all), and why where it is limited.
    precisions: tuple[str, ...] | None = None
    precisions_note: str = ""
    # The dataset format `tbd run --data PATH` reads (tbd.data.recipes.FORMATS: "imagenet",
    # "voc", ...); "" where the workload has none, and why (`data_note`).
    data_format: str = ""
    data_note: str = ""
    # The hyperparameter that `--seq-len` (`seq_len`) sets where the workload names its
    # sequence length otherwise (gpt's context, "block_size"); "" where it has no such name.
    sequence_hparam: str = ""

    @property
    def batch_counts(self) -> str:
        return self.batch_unit or self.sample_unit

    def host_batch_limit(self) -> int | None:
        """The largest batch this host can run where the batch counts processes on its cores
        (`batch_on_host_cores`); None where the batch is not processes."""
        return MAX_HOST_PROCESSES_PER_CORE * (os.cpu_count() or 1) if self.batch_on_host_cores else None

    def flavor(self, name: str) -> Flavor:
        if name not in self.flavors:
            raise unknown(f"flavor of {self.name}", name, self.flavors)
        return self.flavors[name]


def conv2d_flops(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1) -> float:
    """Forward FLOPs of a 2-D convolution: one multiply and one add per weight per output pixel."""
    return 2.0 * (c_in // groups) * c_out * kernel * kernel * h_out * w_out


def linear_flops(n_in: int, n_out: int) -> float:
    return 2.0 * n_in * n_out


# Backward costs about twice the forward (gradients w.r.t. inputs and weights): 3x in all.
TRAIN_FLOPS_PER_FORWARD = 3.0
