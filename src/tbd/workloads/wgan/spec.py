"""WGAN-GP with residual generator and critic on 64x64 images (downsampled-ImageNet-shaped).

`tbd run wgan --flavor tiny` exercises it on the CPU.

One step = one generator iteration including its n_critic (5) critic iterations, each on its own
real batch; units and samples are the real images the critic consumed in the step
(n_critic x batch), so "images/s" is the rate at which training data are used. The FLOPs per
sample are the step's FLOPs divided by those images. The step is the implementation's own
(`TorchTask.train_step`: two Adam optimizers, the critic's loop inside).

The loss a step reports is the critic's, E[D(fake)] - E[D(real)] + 10 * GP, averaged over the
step's critic iterations: it falls as the critic learns to tell the real batch from the
generator's output, so the registry's fixed-batch check ("30 steps lower the loss") applies as it
is. (The generator's loss would rise while the critic wins, and means little on its own.)
"""

from __future__ import annotations

from tbd.errors import UsageError
from tbd.workloads.base import Flavor, WorkloadSpec

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=8,
        description="16x16 images, width 8 (generator 4->8->16, critic 16->8->4), 5 critic steps per generator step",
        hparams=dict(image_size=16, dim=8, g_mults=(4, 2, 1), d_mults=(1, 2, 4), noise_dim=32,
                     n_critic=5, gp_weight=10.0, lr=1e-4, beta1=0.0, beta2=0.9),
    ),
    "paper": Flavor(
        "paper",
        batch_size=64,
        description="64x64 images, ResNet generator and critic of width 64, 5 critic steps per generator step, "
                    "gradient penalty 10, Adam lr 1e-4 betas (0, 0.9)",
        hparams=dict(image_size=64, dim=64, g_mults=(8, 8, 4, 2, 1), d_mults=(1, 2, 4, 8, 8), noise_dim=128,
                     n_critic=5, gp_weight=10.0, lr=1e-4, beta1=0.0, beta2=0.9),
    ),
}


def check_sizes(hp) -> None:
    """Each residual block doubles (generator) or halves (critic) the size, from or to 4x4."""
    for key in ("g_mults", "d_mults"):
        if 4 * 2 ** (len(hp[key]) - 1) != hp["image_size"]:
            raise UsageError(f"wgan: {key} has {len(hp[key])} entries, which gives {4 * 2 ** (len(hp[key]) - 1)} px, "
                             f"not image_size={hp['image_size']}; use {1 + (hp['image_size'] // 4).bit_length() - 1} entries")


def _conv(c_in: int, c_out: int, k: int, s: int) -> float:
    return 2.0 * c_in * c_out * k * k * s * s


def generator_layers(hp) -> list[float]:
    """Forward FLOPs of each weighted layer of the generator, input to output, for one image."""
    dim, mults = hp["dim"], tuple(hp["g_mults"])
    layers = [2.0 * hp["noise_dim"] * 16 * mults[0] * dim]  # z -> 4x4 map
    s = 4
    for a, b in zip(mults, mults[1:]):
        layers += [_conv(a * dim, b * dim, 1, s), _conv(a * dim, b * dim, 3, 2 * s), _conv(b * dim, b * dim, 3, 2 * s)]
        s *= 2
    return layers + [_conv(mults[-1] * dim, 3, 3, s)]


def critic_layers(hp) -> list[float]:
    """Forward FLOPs of each weighted layer of the critic, input to output, for one image."""
    dim, mults = hp["dim"], tuple(hp["d_mults"])
    s = hp["image_size"]
    layers = [_conv(3, mults[0] * dim, 3, s)]
    for a, b in zip(mults, mults[1:]):
        layers += [_conv(a * dim, a * dim, 3, s), _conv(a * dim, b * dim, 3, s), _conv(a * dim, b * dim, 1, s // 2)]
        s //= 2
    return layers + [2.0 * 16 * mults[-1] * dim]


def step_flops_per_image(hp) -> dict[str, float]:
    """FLOPs of one step per real image, by phase. 2 FLOPs per multiply-add; each gradient a
    backward computes costs one forward of that layer (input and weight gradients: backward =
    2x forward). G, D: forward FLOPs of one image; D1, G1: their first layer, which never needs
    the gradient w.r.t. its input (images, noise).

    Per critic iteration (batch B, B images of the step's n_critic x B):
      - fake images, generator without gradients:                  G
      - critic on real and fake (one 2B pass), weight gradients and
        input gradients of all but the first layer:                 2 x (3D - D1)
      - gradient penalty: forward on the interpolates, then their
        input gradient (create_graph):                              D + D
      - the critic update differentiates that gradient: 2 for each
        layer's input-gradient op (w.r.t. its input and weights),
        and back through the forward pass because the layer norms
        make the input gradient depend on the activations: 2 more,
        less the first layer's input gradient:                      4D - D1
    Generator iteration (B images): G forward, critic forward and input gradients (no critic
    weight gradients), generator backward less the first layer's input gradient: 3G - G1 + 2D.
    """
    g, d = generator_layers(hp), critic_layers(hp)
    G, D, G1, D1 = sum(g), sum(d), g[0], d[0]
    critic_iter = G + 2 * (3 * D - D1) + 2 * D + (4 * D - D1)
    gen_iter = 3 * G - G1 + 2 * D
    n_c = hp["n_critic"]
    return {"critic_iterations": critic_iter, "generator_iteration": gen_iter / n_c, "total": critic_iter + gen_iter / n_c}


def train_flops_per_sample(flavor: Flavor) -> float:
    return step_flops_per_image(flavor.hparams)["total"]


SPEC = WorkloadSpec(
    name="wgan",
    domain="adversarial learning",
    dataset="ImageNet 64x64 (downsampled; synthetic images in [-1, 1] of the same shape)",
    description="WGAN-GP: ResNet generator and critic, 5 critic steps per generator step, gradient penalty 10, Adam",
    flavors=FLAVORS,
    sample_unit="images",
    unit="images",
    batch_unit="images",
    units_per_sample=lambda flavor: 1.0,
    train_flops_per_sample=train_flops_per_sample,
    flops_note="one step = 1 generator + n_critic critic iterations; per real image consumed (n_critic x batch a step); "
               "convolutions and linear layers, 2 FLOPs per multiply-add, backward = 2x forward for layers that need "
               "input and weight gradients; the gradient penalty's double backward counted as forward + input "
               "gradient + 4x forward (see spec.step_flops_per_image); norms, pooling and elementwise ops left out",
    convolutional=True,
    data_format="images",
)
