"""The environment a run ran in: library versions, device and driver, source revision."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tbd.metrics.devices import gpu_info
from tbd.version import __version__

# Libraries of the core; each framework plugin adds its own (`FrameworkPlugin.libraries`).
CORE_LIBRARIES = ("numpy", "nvidia-ml-py", "psutil")


def library_versions(names=CORE_LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def source_revision(with_diff: bool = False) -> dict[str, Any]:
    """Git commit of the tbd source tree and whether it had uncommitted changes; `with_diff` adds
    a hash of those changes, so two different edits of a dirty tree are told apart."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None, "note": "not a git checkout"}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        out: dict[str, Any] = {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
        if with_diff and out["dirty"]:
            diff = subprocess.run(["git", "-C", str(root), "diff", "HEAD"], capture_output=True, timeout=10)
            out["diff_sha1"] = hashlib.sha1(diff.stdout).hexdigest()[:12]
        return out
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "git not available"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil is a core dependency, but a record without RAM beats no record
        return None


def _env_name() -> str | None:
    """The name `tbd env create` gave this venv, None for any other interpreter."""
    from tbd.results.envs import name_of

    return name_of(sys.prefix) if sys.prefix != sys.base_prefix else None


def capture(device: str, libraries: tuple[str, ...] = ()) -> dict[str, Any]:
    """The environment of a run on `device`, with the versions of the core's and `libraries`."""
    env: dict[str, Any] = {
        "tbd_version": __version__,
        "python": sys.version.split()[0],
        # The interpreter of the run (another environment's with --python / --env) and its venv's name.
        "interpreter": sys.executable,
        "env_name": _env_name(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "libraries": library_versions(CORE_LIBRARIES + tuple(libraries)),
        "source": source_revision(),
        "device": device,
    }
    if device == "cuda":
        env["gpu"] = gpu_info(0)
    return env
