"""MXNet 1.9.1, the TBD paper's legacy framework, in its own environment (numpy < 1.24).

Run by `make test-mxnet`, which makes the environment (`tbd env create mxnet --framework
mxnet==1.9.1`, in .venv-mxnet) and points TBD_MXNET_PYTHON at it; in `make test` that variable
is unset and these tests are skipped with that reason. The registry-generated smoke, loss and
batch-one tests of the mxnet pairs run inside that environment too (the Makefile target).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tbd.results.store import Store
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
# Only where asked for (make test-mxnet sets it), so that `make test` keeps its time budget.
MXNET_PYTHON = os.environ.get("TBD_MXNET_PYTHON", "")
pytestmark = pytest.mark.skipif(not MXNET_PYTHON or not os.path.exists(MXNET_PYTHON), reason=(
    "no MXNet environment (TBD_MXNET_PYTHON): 'make test-mxnet' makes one (tbd env create mxnet --framework mxnet==1.9.1) "
    "and runs these tests"))


def in_mxnet_env(code: str, timeout: float = 600) -> dict:
    """Run `code` with the MXNet environment's Python; it prints one JSON line last."""
    out = subprocess.run([MXNET_PYTHON, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_environment_has_mxnet_and_old_numpy_and_no_torch():
    facts = in_mxnet_env("import importlib.util, json, mxnet, numpy; print(json.dumps({'mxnet': mxnet.__version__, "
                         "'numpy': numpy.__version__, 'torch': importlib.util.find_spec('torch') is not None}))")
    assert facts["mxnet"] == "1.9.1" and facts["numpy"].startswith("1.23.") and not facts["torch"]


def test_tbds_light_core_and_the_runs_child_path_import_no_framework():
    facts = in_mxnet_env(
        "import json, sys\n"
        "import tbd.cli, tbd.config, tbd.registry, tbd.frameworks, tbd.harness.child_process, tbd.harness.runner, tbd.harness.measure\n"
        "import tbd.results.store, tbd.results.environment, tbd.results.interpreters, tbd.frameworks.mxnet\n"
        "tbd.cli.build_parser()\n"
        "print(json.dumps([m for m in ('mxnet', 'torch', 'jax', 'tensorflow') if m in sys.modules]))")
    assert facts == []


def test_resnet50_runs_in_the_mxnet_environment_and_the_record_says_so():
    out = run_cli("run", "resnet50", "--framework", "mxnet", "--python", MXNET_PYTHON, "--device", "cpu", "--max-steps", "6", "--max-time", "20")
    assert out.returncode == 0, out.stderr + out.stdout
    (record,) = Store().list()
    env = record["environment"]
    assert record["status"] in ("ok", "unconverged", "insufficient") and record["metrics"]["images_per_s"] > 0
    assert env["interpreter"] == os.path.abspath(MXNET_PYTHON) and env["framework_version"] == "1.9.1"
    assert env["libraries"]["mxnet"] == "1.9.1" and "torch" not in env["libraries"]
    assert record["workload"]["num_parameters"] == 23_528_522  # 10 classes: as torchvision's resnet50(num_classes=10)
    assert "hybridize" in record["method"]["compile"]


def test_gluon_models_have_torchvisions_parameter_counts():
    counts = in_mxnet_env(
        "import json, mxnet as mx\n"
        "from tbd.workloads.resnet50.mxnet_impl import ResNet50\n"
        "from tbd.workloads.inception_v3.mxnet_impl import InceptionV3\n"
        "out = {}\n"
        "for name, net, size in (('resnet50', ResNet50(1000), 224), ('inception_v3', InceptionV3(1000), 299)):\n"
        "    net.initialize(mx.init.MSRAPrelu())\n"
        "    net(mx.nd.zeros((1, 3, size, size)))\n"
        "    out[name] = sum(p.data().size for p in net.collect_params().values() if p.grad_req != 'null')\n"
        "print(json.dumps(out))")
    # torchvision: resnet50() and inception_v3(aux_logits=False, init_weights=False), 1000 classes
    assert counts == {"resnet50": 25_557_032, "inception_v3": 23_834_568}
