"""`timm:MODEL`: any timm model, random weights (nothing is downloaded), trained as an image
classifier on synthetic images of the model's default input size and classes.

`tbd run timm:vit_base_patch16_224 --batch-size 128 --precision bf16` on a GPU;
`tbd run timm:resnet18` (the tiny flavor: a batch of 2) on a CPU. The model name is checked
against `timm.list_models()` before the run (`torch_impl.check`).

FLOPs are not analytic here: the PyTorch session counts them on one step with
`torch.utils.flop_counter` (forward + backward, optimizer excluded), and the record says so.
"""

from __future__ import annotations

from tbd.workloads.base import Flavor, WorkloadSpec

EXAMPLE = "resnet18"


def spec_for(model: str) -> WorkloadSpec:
    # image_size / num_classes None: the model's defaults (its pretrained_cfg input size and head).
    hp = dict(model=model, image_size=None, num_classes=None, lr=1e-3, weight_decay=0.05)
    flavors = {
        "tiny": Flavor("tiny", 2, "the model as timm builds it, a batch of 2 images: a CPU check", hp),
        "paper": Flavor("paper", 128, "the model as timm builds it, a batch of 128 images: a GPU training setting", hp),
    }
    return WorkloadSpec(
        name=f"timm:{model}",
        domain="image classification",
        dataset="ImageNet-like synthetic images at the model's default input size, its default number of classes",
        description=f"timm's {model}, random weights, cross-entropy, AdamW",
        flavors=flavors,
        sample_unit="images",
        unit="images",
        units_per_sample=lambda flavor: 1.0,
        train_flops_per_sample=lambda flavor: None,  # counted by the session (flop counter)
        flops_note="counted with torch.utils.flop_counter on one training step (forward + backward), not analytic",
        convolutional=True,  # image models: an NHWC layout (--channels-last) is meaningful
        requires=("timm",),
        install="pip install 'tbd[timm]'",
    )
