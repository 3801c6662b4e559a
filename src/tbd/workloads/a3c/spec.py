"""A3C (Mnih et al. 2016) with the small convolutional policy on Atari Pong, on the real emulator.

`tbd run a3c --flavor tiny` exercises it on the CPU (needs `pip install 'tbd[rl]'`).

Environment: gymnasium's `ALE/Pong-v5` (ale-py, ROMs included) with the emulator repeating each
action for `frameskip` = 4 frames, no sticky actions (repeat_action_probability 0, as in the A3C
paper), the minimal action set (6 actions for Pong), grayscale screens resized to 84x84 and the
last 4 stacked. Rewards are Pong's points, already in {-1, 0, 1}.

Network: conv 16 8x8 stride 4, conv 32 4x4 stride 2, fc 256 (ReLU after each), a softmax policy
head and a value head. Loss per rollout: policy gradient with n-step advantages, 0.5 x value
squared error, minus 0.01 x entropy; gamma 0.99; gradient norm clipped at 40; RMSProp with
statistics shared by all actors (lr 7e-4, decay 0.99, eps 0.1 inside the square root, as the paper).

One harness step = one round of updates. Each of the N actor processes (N = the batch size) (persistent, started when
the run is built and stopped when it closes) copies the shared weights into its local policy,
plays exactly t_max agent steps in its own emulator (an episode that ends inside the rollout is
reset and its return recorded; the n-step return does not bootstrap across the end), computes
the A3C loss and its gradients over the rollout, and applies them:
- on the CPU, Hogwild as A3C does: straight into the shared-memory model and RMSProp statistics,
  without locks, while the other actors are still playing or updating;
- on CUDA, the shared model and its optimizer live on the GPU in the main process (a learner):
  actors send their gradients through shared memory and the learner applies each as it arrives
  (asynchronously with respect to the other actors' play), then publishes the new weights to a
  shared CPU copy that actors read at the start of their next rollout. Emulators and the batch-1
  acting forwards stay on the CPU, where they are fastest; the GPU holds the training state.
The hparam update_rule picks 'hogwild' or 'learner' explicitly (default 'auto': by device).
A round ends when all N actors have contributed one update: N updates per step.

Throughput: environment frames per second, frames = agent steps x frameskip (the convention of
the A3C paper; the emulator itself plays up to frameskip - 1 frames fewer at an episode end).
Samples are agent steps; updates per second are recorded in the run's method (`a3c` entry).
"""

from __future__ import annotations

from tbd.workloads.base import TRAIN_FLOPS_PER_FORWARD, Flavor, WorkloadSpec, conv2d_flops, linear_flops

SCREEN = 84
STACK = 4
# (out channels, kernel, stride) of the two convolutions, then the fully connected width.
CONVS = ((16, 8, 4), (32, 4, 2))
HIDDEN = 256

_COMMON = dict(
    game="Pong", num_actions=6, frameskip=4, t_max=20, gamma=0.99, entropy_coef=0.01, value_coef=0.5,
    lr=7e-4, rms_decay=0.99, rms_eps=0.1, max_grad_norm=40.0,
    # 'auto': Hogwild on the CPU, a GPU learner on CUDA; 'hogwild' or 'learner' forces one
    # ('learner' also runs on the CPU, which is how the tests check the CUDA path's logic).
    update_rule="auto",
)

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=2,  # the batch size is the number of actor processes
        description="2 actor processes, t-max 20: a round of updates in well under a second on a CPU",
        hparams=dict(_COMMON),
    ),
    "paper": Flavor(
        "paper",
        batch_size=8,
        description="8 actor processes, t-max 20, RMSProp 7e-4 shared, entropy 0.01",
        hparams=dict(_COMMON),
    ),
}


def _out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def feature_size() -> int:
    s = SCREEN
    for _, k, st in CONVS:
        s = _out(s, k, st)
    return CONVS[-1][0] * s * s


def forward_flops(num_actions: int) -> float:
    """One forward of one observation (4 x 84 x 84): convolutions, fc and the two heads."""
    s, c_in, flops = SCREEN, STACK, 0.0
    for c, k, st in CONVS:
        s = _out(s, k, st)
        flops += conv2d_flops(c_in, c, k, s, s)
        c_in = c
    return flops + linear_flops(feature_size(), HIDDEN) + linear_flops(HIDDEN, num_actions + 1)


def first_conv_flops() -> float:
    c, k, st = CONVS[0]
    s = _out(SCREEN, k, st)
    return conv2d_flops(STACK, c, k, s, s)


def train_flops_per_sample(flavor: Flavor) -> float:
    """Per agent step: the acting forward (plus one bootstrap forward per rollout) and the loss's
    forward and backward over the rollout; the first conv has no input gradient to compute."""
    fwd, t = forward_flops(flavor["num_actions"]), flavor["t_max"]
    acting = fwd * (t + 1) / t
    return acting + TRAIN_FLOPS_PER_FORWARD * fwd - first_conv_flops()


SPEC = WorkloadSpec(
    name="a3c",
    domain="deep reinforcement learning",
    dataset="Atari 2600 Pong through the Arcade Learning Environment (real emulator, no dataset)",
    description="A3C, small conv policy (16-32-256), N actor processes, t-max 20, shared RMSProp",
    flavors=FLAVORS,
    sample_unit="agent_steps",
    unit="frames",
    batch_unit="actor processes",
    batch_on_host_cores=True,
    irregular_steps="actors end their episodes at irregular rounds, and a round with an emulator reset takes longer",
    units_per_sample=lambda flavor: float(flavor["frameskip"]),
    train_flops_per_sample=train_flops_per_sample,
    flops_note=(
        "per agent step: acting forward (batch 1; one more per rollout for the bootstrap value) + "
        "forward and backward of the rollout loss (backward 2x forward, 1x for the first conv); "
        "convolutions and linear layers, 2 FLOPs per multiply-add; the emulator's work is not counted"
    ),
    requires=("gymnasium", "ale_py"),
    install="pip install 'tbd[rl]'",
    precisions=("fp32", "tf32"),  # tf32 only touches the learner's update on a GPU
    precisions_note="actors act and compute gradients in fp32 on the CPU",
    data_note="reinforcement learning: it makes its own experience by playing Atari environments",
)
