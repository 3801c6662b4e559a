"""Deep Speech 2 in PyTorch: conv front end, cuDNN bidirectional GRUs over packed sequences, CTC.

`tbd run deepspeech2 --flavor tiny` exercises it; the architecture and data are described in
`spec.py`. Padded frames never reach the GRUs (the batch is packed by length) and CTC sees each
utterance's true output length, so bucketed batches of unequal lengths train correctly.

Shapes: each batch's frames are padded to the next of a fixed set of widths (`data.frame_edges`,
as in JAX and TensorFlow: under an eighth of padding for paper-length utterances), in eager mode
too, so both do the same work. Under --compile the convolutional front end is compiled with
static shapes, once per width it meets: a time dimension marked dynamic does not survive tracing
(the convolutions' channels-last layout check guards on the exact width, so every new width
recompiled anyway, each time as a slower symbolic-shape compile). The output lengths are
computed on the host outside the compiled graph (a CPU tensor in it would make a GPU graph
compile a C++ kernel too). The GRUs, which do most of the work, run eagerly on the packed true
lengths either way (Dynamo does not trace RNN modules).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.deepspeech2.data import bucketed_batch, frame_edges, sample_durations, utterance_lengths  # noqa: F401 (re-exported)
from tbd.workloads.deepspeech2.spec import CONVS, FRAMES_PER_S, NUM_CHARS, conv_out, feature_sizes
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_host import bucket


@torch.compiler.disable
def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the convolutions, (B,) on the host; under --compile it stays out of the graph."""
    for (_, kt), (_, st), (_, pt) in CONVS:
        lengths = conv_out(lengths, kt, st, pt)  # integer arithmetic works on tensors too
    return lengths


class DeepSpeech2(nn.Module):
    def __init__(self, freq_bins: int, conv_channels: int, hidden: int, gru_layers: int):
        super().__init__()
        layers, c_in, c = [], 1, conv_channels
        for kernel, stride, pad in CONVS:
            layers += [nn.Conv2d(c_in, c, kernel, stride, pad, bias=False), nn.BatchNorm2d(c), nn.Hardtanh(0, 20, inplace=True)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        f, _ = feature_sizes(freq_bins, 1)[-1]
        self.rnn = nn.GRU(c * f, hidden, num_layers=gru_layers, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, NUM_CHARS)

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """spec (B, 1, F, T), lengths (B,) frames on the host -> log-probs (T', B, chars), lengths (B,).

        Lengths stay on the host: packing needs them there, and a device copy would cost a sync."""
        out_lengths = output_lengths(lengths)
        x = self.conv(spec)  # (B, C, F', T')
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).permute(2, 0, 1)  # (T', B, C*F')
        packed = pack_padded_sequence(x, out_lengths, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, total_length=t)  # (T', B, 2H), zeros past each length
        return F.log_softmax(self.fc(y).float(), dim=-1), out_lengths


def padded_width(hp, frames: int) -> int:
    """The frame edge a batch whose longest utterance has `frames` frames is padded to (a batch
    from disk longer than the flavor's longest edge keeps its own length)."""
    return max(frames, bucket(frames, flavor_edges(hp)))


def flavor_edges(hp) -> list[int]:
    return frame_edges(int(round(hp["max_s"] * FRAMES_PER_S)))


def make_batch_for(hp, n: int, gen: torch.Generator, device: torch.device, shape_seed: int, quantile: float):
    # The lengths from the batch's shape seed and quantile (tbd.workloads.draws: the same in every framework),
    # the spectrogram and transcripts from the framework's generator on the device.
    frames, n_chars = utterance_lengths(np.random.default_rng(shape_seed), n, hp, quantile)
    width = padded_width(hp, int(frames.max()))
    spec = torch.randn(n, 1, hp["freq_bins"], width, generator=gen, device=device)
    mask = torch.arange(width, device=device)[None, :] < torch.as_tensor(frames, device=device)[:, None]
    spec = spec * mask[:, None, None, :]  # silence (zeros after normalization) past each end
    targets = torch.randint(1, NUM_CHARS, (int(n_chars.sum()),), generator=gen, device=device)
    # (spec, targets on the device; frame and character counts on the host)
    return (spec, targets, torch.as_tensor(frames), torch.as_tensor(n_chars))


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """A loader's batch of spectrograms as the synthetic batch: (spec, targets) on the device,
    frame and character counts on the host; the frames padded to their edge (`padded_width`)."""
    spec = host["spec"].to(device, non_blocking=True)
    spec = F.pad(spec, (0, padded_width(ctx.hparams, spec.shape[-1]) - spec.shape[-1]))
    return (spec, host["targets"].to(device, non_blocking=True), host["frames"], host["n_chars"])


def _python_dispatch_active() -> bool:
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    draws = shape_draws("deepspeech2", ctx.seed, ctx.data_pool)
    model = DeepSpeech2(hp["freq_bins"], hp["conv_channels"], hp["hidden"], hp["gru_layers"])
    # One compiled front end per frame edge (27 in paper): past Dynamo's recompile limit (8) a
    # new width would silently run eagerly, e.g. from a dataset on disk, which meets them all.
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, len(flavor_edges(hp)) + 1)

    def loss(model, batch):
        spec, targets, lengths, target_lengths = batch
        log_probs, out_lengths = model(spec, lengths)
        if _python_dispatch_active():
            # Under a dispatch mode (tbd memory's tracker) ctc_loss takes its tensor-subclass path,
            # which needs the lengths on the log-probs' device; plain training keeps them on the
            # host, where ctc_loss reads them without a device sync.
            out_lengths, target_lengths = out_lengths.to(log_probs.device), target_lengths.to(log_probs.device)
        # 'mean' divides each utterance's loss by its transcript length, then averages.
        return F.ctc_loss(log_probs, targets, out_lengths, target_lengths, blank=0, zero_infinity=True)

    def make_batch(gen, device):
        draw = next(draws)
        return make_batch_for(hp, ctx.batch_size, gen, device, draw.seed, draw.quantile)

    return TorchTask(
        model=model,
        make_optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=hp["lr"], betas=tuple(hp["betas"])),
        make_batch=make_batch,
        loss=loss,
        # Static shapes: one compile per frame edge met (see the module docstring).
        compile_options={"dynamic": False},
        units=lambda batch: float(batch[2].sum()) / FRAMES_PER_S,  # seconds of audio
        samples=lambda batch: float(batch[2].numel()),  # utterances
    )
