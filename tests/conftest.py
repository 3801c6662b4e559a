import os
import subprocess
import sys

import pytest


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
