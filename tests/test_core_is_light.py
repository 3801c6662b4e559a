"""The core (CLI, harness, metrics, store, reports) must import no deep-learning framework."""

import subprocess
import sys

FRAMEWORKS = ("torch", "jax", "flax", "tensorflow", "optax", "torchvision", "mxnet")


def test_core_imports_no_framework():
    code = (
        "import sys, pkgutil, importlib, tbd\n"
        "import tbd.cli, tbd.config, tbd.registry, tbd.harness.measure, tbd.harness.runner, tbd.harness.launcher\n"
        "import tbd.results.store, tbd.results.export, tbd.report.tables, tbd.metrics.sampling\n"
        "tbd.cli.build_parser()\n"
        "import tbd.api, tbd.harness.child_process, tbd.results.interpreters, tbd.results.envs, tbd.frameworks.mxnet\n"
        "tbd.run, tbd.measure, tbd.results, tbd.RunResult\n"
        "from tbd import registry\n"
        "[registry.get_spec(w) for w in ('timm:resnet18', 'hf:gpt2', 'custom:x')]\n"
        "from tbd import registry\n"
        "[registry.get_spec(w) for w in registry.workload_names()]\n"
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported: {out.stdout}"
