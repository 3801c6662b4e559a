"""Fixtures of the fault-injection suite; helpers are in faults_kit.py."""

from __future__ import annotations

import os

import pytest
from faults_kit import TMPFS, stored_runs
from sweep_fakes import fake_record

from tbd.config import RunConfig


@pytest.fixture
def read_only_store(tmp_path):
    """(home, wrap): a store with two runs, and `wrap(argv)`, the command that runs argv with the
    store read-only. Not root: the folder and files are chmod-ed. Root (whom permissions do not
    stop): the folder is bind-mounted read-only in a private mount namespace."""
    home = tmp_path / "ro-home"
    stored_runs(home)
    if os.geteuid() != 0:
        for p in [home / "runs", home]:
            p.chmod(0o555)
        (home / "tbd.sqlite").chmod(0o444)
        yield home, lambda argv: argv
        for p in [home, home / "runs"]:
            p.chmod(0o755)
        return
    if not TMPFS:  # the same permission to mount
        pytest.skip("root without permission to mount: nothing makes a folder read-only for root")
    import shlex

    def wrap(argv: list[str]) -> list[str]:
        script = f"mount --bind {home} {home} && mount -o remount,ro,bind {home} && exec {shlex.join(argv)}"
        return ["unshare", "-m", "sh", "-c", script]

    yield home, wrap


@pytest.fixture
def launches(monkeypatch):
    """Stands in for the launcher of `tbd run` / `tbd scale` / `tbd sweep`: counts the runs
    that were measured and returns fake records."""
    calls: list[RunConfig] = []

    def launch(config, progress=None):
        calls.append(config)
        return fake_record(config)

    import tbd.commands.run
    import tbd.harness.launcher

    monkeypatch.setattr(tbd.commands.run, "launch", launch)
    monkeypatch.setattr(tbd.harness.launcher, "launch", launch)
    return calls
