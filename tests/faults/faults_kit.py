"""Helpers of the fault-injection suite (tests/faults): a store with runs in it, a full disk, the
processes of a `tbd` command. The fixtures are in conftest.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parents[1] / "sweep"))  # sweep_fakes: fake records and launcher

from sweep_fakes import fake_record  # noqa: E402

from tbd.config import RunConfig  # noqa: E402
from tbd.results.store import Store  # noqa: E402

SRC = str(Path(__import__("tbd").__file__).parents[1])


def stored_runs(home: Path, n: int = 2, **config) -> list[dict]:
    """n fake runs (batch 1..n) saved in the store at `home`."""
    store = Store(home)
    records = []
    for b in range(1, n + 1):
        record = fake_record(RunConfig(**{"workload": "resnet50", "device": "cpu", "batch_size": b, **config}))
        store.save(record)
        records.append(record)
    return records


def cli(*args: str, env: dict | None = None, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """`tbd ARGS` in a fresh interpreter (the worktree's sources first on the path)."""
    full_env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tbd.cli", *args], capture_output=True, text=True, timeout=timeout, env=full_env, **popen)


def one_error_line(out: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single 'tbd: error:' line of a command that failed as it should (no traceback)."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and len(lines) == 1 and lines[0].startswith("tbd: error:"), out.stderr
    return lines[0]


# ---- a disk that is full -----------------------------------------------------------------


def _tmpfs_works() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = tempfile.mkdtemp()
    try:
        out = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"], capture_output=True, timeout=20)
        return out.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        os.rmdir(probe)


TMPFS = _tmpfs_works()


def on_small_disk(mount: Path, size_kib: int, fill: bool, command: list[str], setup: str = "") -> list[str]:
    """`command` run with a tmpfs of `size_kib` mounted at `mount` (a private mount namespace:
    nothing outside sees it), after `setup` (shell) ran on it; with `fill`, the disk is then
    filled up. Where mounting is not allowed, the same command under a file-size limit
    (RLIMIT_FSIZE: writes beyond it fail, as on a full disk); see `preexec`."""
    if not TMPFS:
        return command
    import shlex

    filler = f"dd if=/dev/zero of={mount}/.filler bs=4k >/dev/null 2>&1;" if fill else ""
    script = f"mount -t tmpfs -o size={size_kib}k tmpfs {mount} && {setup} {filler} exec {shlex.join(command)}"
    return ["unshare", "-m", "sh", "-c", script]


def preexec_small_disk(limit_bytes: int):
    """Without tmpfs: a file-size limit stands in for the full disk."""
    if TMPFS:
        return None

    def limit():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return limit


# ---- a store that cannot be written ------------------------------------------------------


# ---- processes ---------------------------------------------------------------------------


def wait_for(predicate, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
