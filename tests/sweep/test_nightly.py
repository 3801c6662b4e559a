"""The nightly recipe of issue 21, with a fake launcher: a sweep under a new name, or at a new
code revision, measures again, so a planted slowdown fails `--fail-if-slower`; the same sweep
with the same code resumes; `--rerun` and `--resume ID` do what they say; old names still work."""

from __future__ import annotations

import pytest
from sweep_fakes import FakeLauncher

from tbd.cli import main
from tbd.harness import launcher
from tbd.results import environment

NIGHTLY = 'workloads = ["resnet50"]\nframeworks = ["torch"]\ndevices = ["cpu"]\nbatch_sizes = [4, 8]\n[budget]\nmax_time = 1\n'


@pytest.fixture
def nightly(tbd_home, tmp_path, monkeypatch):
    """(run `tbd ...` -> (exit code, stdout), the fake launcher, the revision to report)."""
    fake = FakeLauncher(rate=100.0)
    monkeypatch.setattr(launcher, "launch", fake)
    revision = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(environment, "source_revision", lambda with_diff=False: dict(revision))
    (tmp_path / "nightly.toml").write_text(NIGHTLY)

    def tbd(*argv):
        code = main([a.replace("FILE", str(tmp_path / "nightly.toml")).replace("BASE", str(tmp_path / "base.json")) for a in argv])
        return code

    return tbd, fake, revision


def test_a_planted_slowdown_is_caught(nightly, capsys):
    tbd, fake, revision = nightly
    assert tbd("sweep", "--file", "FILE", "--name", "baseline", "--in-process") == 0
    assert tbd("compare", "--save-baseline", "BASE", "baseline") == 0
    # night 1: same code, new name -> a new sweep that measures both points
    assert tbd("sweep", "--file", "FILE", "--name", "nightly-new", "--in-process") == 0
    assert "2 run, 0 already done" in capsys.readouterr().out and len(fake.calls) == 4
    assert tbd("compare", "BASE", "nightly-new", "--fail-if-slower", "5") == 0
    # night 2: a commit makes training 20% slower; same sweep name, new code -> measured again, caught
    fake.rate, revision["commit"] = 80.0, "b" * 40
    assert tbd("sweep", "--file", "FILE", "--name", "nightly-new", "--in-process") == 0
    out = capsys.readouterr().out
    assert "2 run, 0 already done" in out and "measured before" in out and len(fake.calls) == 6
    assert tbd("compare", "BASE", "nightly-new", "--fail-if-slower", "5") == 1
    assert "regression: 2 point(s)" in capsys.readouterr().out
    # the old sweep names keep working
    assert tbd("compare", "baseline", "nightly-new") == 0


def test_same_sweep_same_code_resumes_and_rerun_measures_again(nightly, capsys):
    tbd, fake, revision = nightly
    assert tbd("sweep", "--file", "FILE", "--name", "n", "--in-process") == 0
    assert tbd("sweep", "--file", "FILE", "--name", "n", "--in-process") == 0
    assert "0 run, 2 already done" in capsys.readouterr().out and len(fake.calls) == 2
    fake.rate = 80.0  # the machine got slower: only a fresh measurement sees it
    assert tbd("sweep", "--file", "FILE", "--name", "n", "--in-process", "--rerun") == 0
    assert "2 run, 0 already done" in capsys.readouterr().out and len(fake.calls) == 4
    assert tbd("compare", "BASE", "n") == 2  # no baseline saved: one line, exit 2


def test_library_upgrade_is_a_new_sweep_and_resume_continues_the_old(nightly, capsys, monkeypatch):
    tbd, fake, revision = nightly
    assert tbd("sweep", "--file", "FILE", "--name", "n", "--in-process") == 0
    first = capsys.readouterr().out.split("(id ")[1].split(")")[0]
    real = environment.library_versions
    monkeypatch.setattr(environment, "library_versions", lambda names=environment.CORE_LIBRARIES: {**real(names), "numpy": "9.9.9"})
    assert tbd("sweep", "--file", "FILE", "--name", "n", "--in-process", "--dry-run") == 0
    out = capsys.readouterr().out
    assert first not in out.split("measured before")[0] and "with numpy" in out
    assert tbd("sweep", "--file", "FILE", "--in-process", "--resume", first[:6]) == 0
    out = capsys.readouterr().out
    assert "0 run, 2 already done" in out and "warning: resuming sweep" in out and len(fake.calls) == 2
    assert tbd("sweep", "--file", "FILE", "--resume", "nope") == 2


def test_a_name_stored_only_in_its_runs_still_resolves(nightly, capsys):
    """A store from before this fix: sweep 's1' was resumed as 's2' and its row renamed; 'tbd compare s1 ...'
    finds s1's runs by the name they carry."""
    from tbd.results.store import Store

    tbd, fake, revision = nightly
    assert tbd("sweep", "--file", "FILE", "--name", "s1", "--in-process") == 0
    store = Store()
    [row] = store.sweeps("s1")
    store.save_sweep(row["id"], "s2", row["spec"], row["summary"])  # what the old resume did to the name
    assert store.sweeps("s1") == []
    assert tbd("compare", "s1", "s2") == 0
    assert "A = sweep s1" in capsys.readouterr().out


def test_resume_alone_continues_the_stored_plan_and_never_replaces_it(nightly, capsys):
    """`--resume ID` with no plan options ran the default plan (every workload x framework) under
    the stored id and wrote that plan over the stored definition."""
    from tbd.results.store import Store

    tbd, fake, revision = nightly
    assert tbd("sweep", "--file", "FILE", "--name", "n", "--in-process") == 0
    first = capsys.readouterr().out.split("(id ")[1].split(")")[0]
    [before] = Store().sweeps(first)
    revision["commit"] = "b" * 40  # new code: --resume still continues the old sweep
    assert tbd("sweep", "--resume", first[:6], "--in-process") == 0
    out = capsys.readouterr().out
    assert "sweep n (id " + first in out and "0 run, 2 already done" in out and len(fake.calls) == 2
    assert "another plan" not in out and "expands into other points" not in out and "with jax" not in out
    # the same plan given again is the same sweep; another plan or name is refused in one line
    assert tbd("sweep", "--file", "FILE", "--resume", first[:6], "--in-process") == 0
    capsys.readouterr()
    for extra in (["--workloads", "gpt"], ["--max-time", "9"], ["--file", "FILE", "--batch-sizes", "4"], ["--name", "other"]):
        assert tbd("sweep", "--resume", first[:6], *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "give a new --name to start a new sweep" in err
    [after] = Store().sweeps(first)
    assert after["spec"] == before["spec"] and after["name"] == "n" and len(fake.calls) == 2


def test_a_library_only_one_plan_uses_is_not_reported_as_changed():
    from tbd.commands.sweep import _identity_change

    source = {"commit": "a" * 40, "dirty": False}
    old = {"source": source, "libraries": {"numpy": "2.4.6", "torch": "2.14.1"}}
    assert _identity_change(old, {"source": source, "libraries": {"numpy": "2.4.6", "torch": "2.14.1", "jax": "0.8.1", "flax": "0.12"}}) == ""
    assert _identity_change(old, {"source": source, "libraries": {"numpy": "2.5.0", "torch": "2.14.1"}}) == "with numpy 2.4.6"
