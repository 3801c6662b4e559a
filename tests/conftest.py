import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

# JAX's persistent compilation cache, for this test session only (a fresh folder, removed at
# exit; child processes inherit it): the registry tests compile the same tiny JAX steps several
# times (smoke run, loss check, memory breakdown, batch 1), and reusing those executables cut the
# JAX tests' time by about 40% on 2 cores. Compile counts are unchanged (JAX reports a cache hit
# as a backend compile, a short one). A folder the user set is left alone.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="tbd-tests-jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")

# XLA:CPU's LLVM back end without its optimization passes, for the tests only (children inherit
# it): most of a tiny JAX step's test time is its compilation, not its few steps, and this cut
# the JAX-heavy tests by about 30% on 2 cores (inception_v3's smoke test 51 -> 38 s, wgan's FLOP
# check 31 -> 19 s). Results are the same functions (XLA keeps its float semantics; the tests
# compare with tolerances). XLA_FLAGS the user set are left alone.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

# `make test` runs two pytest-xdist workers on 2 cores: each worker's torch and XLA:CPU get one
# thread (children inherit it), since two workers each spinning two OpenMP/Eigen threads on two
# cores made torch's tests 2-3x slower than alone. A thread count the user set is left alone.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "intra_op_parallelism_threads" not in os.environ["XLA_FLAGS"]:
        os.environ["XLA_FLAGS"] += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@pytest.fixture(autouse=True)
def tbd_home(tmp_path, monkeypatch):
    """Every test gets its own results store."""
    home = tmp_path / "tbd-home"
    monkeypatch.setenv("TBD_HOME", str(home))
    return home


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`tbd ARGS` in a fresh interpreter, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "tbd.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


# Frameworks whose tests carry their own pytest marker and run in their own CI leg, with the
# modules they need. `make test` deselects them (-m "not tf"); `make test-tf` installs
# TensorFlow into .venv-tf and runs only them with TBD_TF_LEG=1, where a missing module is an
# error, not a skip. Elsewhere (a plain `pytest` without TensorFlow) they skip with the reason.
FRAMEWORK_MARKERS = {"tf": ("tensorflow", "keras")}
TF_LEG_ENV = "TBD_TF_LEG"


def _missing(modules) -> list[str]:
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def pytest_collection_modifyitems(config, items):
    if not os.environ.get(TF_LEG_ENV):
        return
    missing = _missing(FRAMEWORK_MARKERS["tf"])
    if missing and any(item.get_closest_marker("tf") for item in items):
        raise pytest.UsageError(f"the TensorFlow test leg needs {', '.join(missing)}, not importable here; "
                                f"run `make test-tf` (it installs them into .venv-tf)")


def require_tf():
    """tensorflow for a TF test module: skipped without it, except in the TF leg (an error).

    Where torchvision is installed it is imported first: it loads triton (through
    torch._dynamo), whose LLVM crashes the process when it loads after TensorFlow's (seen with
    tensorflow-cpu 2.21 and torch 2.14 wheels); the other order works."""
    if not _missing(("torchvision",)):
        import torchvision  # noqa: F401
    if os.environ.get(TF_LEG_ENV):
        try:
            import tensorflow
        except ImportError as exc:
            pytest.fail(f"the TensorFlow test leg needs tensorflow ({exc}); run `make test-tf`, which installs it into .venv-tf", pytrace=False)
        return tensorflow
    return pytest.importorskip("tensorflow", reason="TensorFlow is not installed here; `make test-tf` runs the TF tests in .venv-tf")
