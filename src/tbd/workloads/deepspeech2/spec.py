"""Deep Speech 2 (Amodei et al. 2016) as TBD trained it: 2 convolutions + 7 bidirectional GRUs + CTC.

`tbd run deepspeech2 --flavor tiny` exercises it on the CPU.

Model (sizes from hparams): two 2-D convolutions over (frequency, time) of a 161-bin
spectrogram, each with batch norm and hardtanh(0, 20) as in DS2 -- conv1 41x11 stride (2, 2),
conv2 21x11 stride (2, 1), 32 filters each (8 in `tiny`) -- then a cuDNN GRU stack (7 layers, 2 in
`tiny`; bidirectional, directions concatenated between layers as `nn.GRU(bidirectional=True)`
does; no batch norm between GRU layers) and a linear layer to 29 characters (CTC blank, a-z,
space, apostrophe). Hidden size: 800 per direction, the size of TBD's MXNet DS2 setup (the DS2
paper's own English models were wider); 64 in `tiny`. Padded frames pass through the
convolutions (their batch norm statistics see the zero padding) but are packed away before the
GRUs. Optimizer: Adam, lr 3e-4 (the paper's rate), betas (0.9, 0.999), no gradient clipping.

Data: synthetic normalized log-spectrograms, 20 ms windows with a 10 ms hop (100 frames per
second of audio). Utterance durations follow a LibriSpeech train-clean-like shape: most between 10
and 17 s, a tail down to about 2 s, mean about 12 s (17 s minus a gamma(1.5, 3.3) draw, clipped to
[1.5, 17]). Transcripts carry about 15 characters per second. A batch is one length bucket:
`batch` neighbours in the sorted order of 256 x batch draws, so padding stays small, as with the
bucketing of the original implementations.

Throughput: seconds of audio per second (the paper's speech metric, "weighted by audio length");
samples are utterances.
"""

from __future__ import annotations

from tbd.workloads.base import TRAIN_FLOPS_PER_FORWARD, Flavor, WorkloadSpec, conv2d_flops, linear_flops
from tbd.workloads.draws import RESIDENT_LENGTHS

FRAMES_PER_S = 100  # 10 ms hop
NUM_CHARS = 29  # CTC blank + 26 letters + space + apostrophe
# ((kernel freq, kernel time), (stride freq, stride time), (pad freq, pad time)); the number of
# filters is the hparam conv_channels (32 in DS2).
CONVS = (((41, 11), (2, 2), (20, 5)), ((21, 11), (2, 1), (10, 5)))

_COMMON = dict(freq_bins=161, conv_channels=32, chars_per_s=15.0, lr=3e-4, betas=(0.9, 0.999))

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=4,
        description="8 conv filters, 2 bi-GRU layers of 64, utterances of 0.3-0.8 s: a CPU step well under a second",
        hparams=dict(_COMMON, conv_channels=8, gru_layers=2, hidden=64, min_s=0.3, max_s=0.8, mean_s=0.6, lr=2e-3),
    ),
    "paper": Flavor(
        "paper",
        batch_size=8,
        description="7 bi-GRU layers of 800, LibriSpeech-like utterances (2-17 s, mean 12 s), batch 8, Adam 3e-4",
        hparams=dict(_COMMON, gru_layers=7, hidden=800, min_s=1.5, max_s=17.0, mean_s=12.0),
    ),
    "large": Flavor(
        "large",
        batch_size=64,
        description="the paper model with a modern batch of 64 utterances",
        hparams=dict(_COMMON, gru_layers=7, hidden=800, min_s=1.5, max_s=17.0, mean_s=12.0),
    ),
}


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def feature_sizes(freq_bins: int, frames: int) -> list[tuple[int, int]]:
    """(freq, time) after each convolution."""
    out, f, t = [], freq_bins, frames
    for (kf, kt), (sf, st), (pf, pt) in CONVS:
        f, t = conv_out(f, kf, sf, pf), conv_out(t, kt, st, pt)
        out.append((f, t))
    return out


def gru_flops(n_in: int, hidden: int) -> float:
    """Forward FLOPs of one GRU direction for one time step: three gates, each an input and a
    recurrent matrix product (element-wise gate math is under 1% and left out)."""
    return linear_flops(n_in, 3 * hidden) + linear_flops(hidden, 3 * hidden)


def forward_flops(hp, frames: int) -> dict[str, float]:
    """Forward FLOPs of one utterance of `frames` spectrogram frames, by part."""
    sizes = feature_sizes(hp["freq_bins"], frames)
    c, c_in, parts = hp["conv_channels"], 1, {}
    for i, ((f, t), ((kf, kt), _, _)) in enumerate(zip(sizes, CONVS)):
        # conv2d_flops assumes a square kernel; (kf x kt) is folded in as kernel=1, c_in x kf x kt.
        parts[f"conv{i + 1}"] = conv2d_flops(c_in * kf * kt, c, 1, f, t)
        c_in = c
    f, steps = sizes[-1]
    n_in, h = c * f, hp["hidden"]
    parts["gru"] = 0.0
    for _ in range(hp["gru_layers"]):
        parts["gru"] += 2 * steps * gru_flops(n_in, h)  # two directions
        n_in = 2 * h
    parts["fc"] = steps * linear_flops(2 * h, NUM_CHARS)
    return parts


def train_flops(hp, frames: int) -> float:
    """Forward + backward; the first convolution needs no input gradient (its input is data),
    so its backward is 1x its forward instead of 2x."""
    parts = forward_flops(hp, frames)
    return TRAIN_FLOPS_PER_FORWARD * sum(parts.values()) - parts["conv1"]


def train_flops_per_sample(flavor: Flavor) -> float:
    return train_flops(flavor.hparams, round(flavor["mean_s"] * FRAMES_PER_S))


SPEC = WorkloadSpec(
    name="deepspeech2",
    domain="speech recognition",
    dataset="LibriSpeech train-clean (synthetic 161-bin spectrograms and transcripts, same length distribution)",
    description="Deep Speech 2: 2 conv (BN, hardtanh) + bidirectional GRUs (cuDNN) + linear, CTC loss, Adam",
    variable_shapes=True,
    synthetic_lengths=RESIDENT_LENGTHS,
    recurrent=True,
    longest_inputs=lambda hp: {"min_s": hp["max_s"]},  # every utterance at the longest duration
    flavors=FLAVORS,
    sample_unit="utterances",
    unit="audio_seconds",
    batch_unit="utterances",
    units_per_sample=lambda flavor: flavor["mean_s"],
    train_flops_per_sample=train_flops_per_sample,
    flops_note=(
        "per utterance of the flavor's mean duration (FLOPs grow linearly with duration, so MFU is "
        "approximate when the measured batches' mean length differs from it); convolutions, GRU gate "
        "matrix products and classifier, 2 FLOPs per multiply-add, backward 2x forward (1x for conv1); "
        "checked against FlopCounterMode on the CPU, where the GRU runs as matrix products -- cuDNN's "
        "fused RNN kernel on the GPU is invisible to FlopCounterMode"
    ),
    data_format="librispeech",
)
