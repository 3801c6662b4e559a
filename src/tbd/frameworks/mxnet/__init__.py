"""The MXNet plugin: `tbd run resnet50 --framework mxnet --env mxnet` (Gluon, hybridized).

MXNet is the legacy framework of the TBD paper. Its last release, 1.9.1, needs numpy < 1.24, so
it lives in an environment of its own (`tbd env create mxnet --framework mxnet==1.9.1`, see
docs/environments.md) and tbd runs it there through `--env` / `--python`: the run's child process
imports tbd's light core and MXNet, never PyTorch. CPU only: the GPU builds of 1.9.1
(mxnet-cu101 ... mxnet-cu112) need CUDA 10.1 to 11.2 runtimes, which current GPU images with
CUDA 12/13 drivers and libraries do not carry.

Parts: `session.py` (a hybridized Gluon block, gluon.Trainer, one host sync per step).
Importing this package imports no mxnet.
"""

from tbd.frameworks.base import Capabilities, FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="mxnet",
    title="MXNet",
    requires=("mxnet",),
    install="tbd env create mxnet --framework mxnet==1.9.1   (its own environment; then --env mxnet)",
    package="tbd.frameworks.mxnet",
    libraries=("mxnet",),
    # numpy 1.24 removed np.bool, which MXNet 1.9.1 still uses; tbd's core takes numpy 1.23.
    env_requirements=("numpy<1.24",),
    capabilities=Capabilities(
        devices=("cpu",),
        devices_note="MXNet 1.9.1's GPU builds need CUDA 10.1-11.2, which this image does not have",
        precisions=("fp32",),
        precisions_note="the MXNet plugin trains in fp32 (MXNet's AMP is not wired into tbd)",
        always_compiled="Gluon hybridize(static_alloc, static_shape): one cached symbolic graph (always; --compile changes nothing)",
        native_layout="NCHW (Gluon's default)",
    ),
)
