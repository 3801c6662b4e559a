"""Named Python environments for runs: `tbd env create NAME --framework REQUIREMENT`, `tbd env list`.

An environment is a venv (`python -m venv`) with tbd's light core and one framework requirement
installed by pip, e.g. `torch==2.11.0` or `mxnet==1.9.1`; `tbd run WORKLOAD --env NAME` then runs
there, as `--python ENV/bin/python` would. tbd is installed from this source checkout in editable
mode (so both sides of a comparison run the same harness code), or `tbd==VERSION` from the
package index when tbd is not run from a checkout. A framework plugin may add pins its
environment needs (`FrameworkPlugin.env_requirements`: numpy<1.24 for MXNet 1.9.1).

Where: `$TBD_HOME/envs/NAME.json` records each environment; its venv is `$TBD_HOME/envs/NAME/`
unless `--dir` puts it elsewhere. The same record is written into the venv (`tbd-env.json`), so
a run's record names the environment it ran in (`tbd.results.environment`).

`--inherit` makes the environment see the packages of the Python that runs tbd (a .pth file
listing its site-packages), behind its own: pip then installs only what differs. That is the
quick way to an environment with the same torch at another path, or one library changed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import site
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbd.errors import UsageError
from tbd.results import interpreters
from tbd.results.store import default_home
from tbd.version import __version__

ENV_FILE = "tbd-env.json"  # inside the venv: read by environment.capture in the run's child
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PIP_TIMEOUT_S = 3600


def envs_dir(home: str | Path | None = None) -> Path:
    return (Path(home).expanduser() if home else default_home()) / "envs"


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name or ""):
        raise UsageError(f"environment name '{name}' is not valid; use letters, digits, '.', '_' and '-' (up to 64), e.g. torch211")


def load(name: str, home: str | Path | None = None) -> dict[str, Any]:
    """The record of a named environment; UsageError naming the fix when there is none."""
    check_name(name)
    path = envs_dir(home) / f"{name}.json"
    if not path.is_file():
        have = ", ".join(e["name"] for e in list_envs(home)) or "none yet"
        raise UsageError(f"no environment '{name}' in {envs_dir(home)} (have: {have}); make it with: tbd env create {name} --framework REQUIREMENT")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"environment record {path} is unreadable ({exc}); make it again: tbd env create {name} --force --framework ...") from None


def python_of(name: str, home: str | Path | None = None) -> str:
    """The interpreter of a named environment (`--env NAME`)."""
    record = load(name, home)
    python = record["python"]
    if not os.path.exists(python):
        raise UsageError(f"environment '{name}' is gone ({python} does not exist); make it again: "
                         f"tbd env create {name} --force --framework {' '.join(record.get('requirements') or ['...'])}")
    return python


def resolve(python: str | None, env: str | None, home: str | Path | None = None) -> str | None:
    """The interpreter a run asks for with --python PATH or --env NAME (None: this one)."""
    if python and env:
        raise UsageError("give --python or --env, not both")
    if env:
        return python_of(env, home)
    return interpreters.resolve_path(python) if python else None


def resolve_word(word: str, home: str | Path | None = None) -> str | None:
    """A sweep's `python` entry: 'current' (this interpreter), a path, or an environment's name."""
    word = word.strip()
    if word in ("current", ""):
        return None
    if os.sep in word or word.startswith("~"):
        return interpreters.resolve_path(word)
    return python_of(word, home)


def list_envs(home: str | Path | None = None) -> list[dict[str, Any]]:
    folder = envs_dir(home)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {"name": path.stem, "python": "?", "broken": f"unreadable record {path}"}
        record["present"] = os.path.exists(record.get("python", ""))
        out.append(record)
    return out


def name_of(prefix: str) -> str | None:
    """The environment name recorded in a venv (None for a plain one)."""
    try:
        return json.loads((Path(prefix) / ENV_FILE).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def plugin_for(requirement: str):
    """The framework plugin a pip requirement installs (`torch==2.11.0` -> PyTorch), or None."""
    from tbd import registry

    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        return None
    wanted = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    for name in registry.framework_names():
        plugin = registry.framework(name)
        if wanted in {re.sub(r"[-_.]+", "-", lib).lower() for lib in plugin.libraries}:
            return plugin
    return None


def _setuptools_builds_wheels() -> bool:
    """setuptools >= 70.1 here: what pyproject asks for (>= 68) with bdist_wheel built in (no `wheel` package needed)."""
    from importlib import metadata

    try:
        version = tuple(int(x) for x in re.findall(r"\d+", metadata.version("setuptools"))[:2])
    except metadata.PackageNotFoundError:
        return False
    return version >= (70, 1)


def _run(cmd: list[str], what: str, say: Callable[[str], None]) -> None:
    say(f"{what}: {' '.join(cmd)}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{what} failed ({exc}); check the command above") from None
    if done.returncode != 0:
        raise UsageError(f"{what} failed (exit {done.returncode}): {' | '.join(failure_lines(done.stdout, done.stderr))[:600]}")


def failure_lines(stdout: str, stderr: str) -> list[str]:
    """What a failed pip or venv said of its failure: its ERROR lines where it printed any (pip's
    progress lines come last on stdout, after the error on stderr), else its last three lines."""
    lines = [x.strip() for x in (stderr + "\n" + stdout).splitlines() if x.strip() and not x.startswith("WARNING: Location")]
    return [x for x in lines if x.startswith(("ERROR:", "error:"))][-3:] or lines[-3:]


def create(name: str, requirements: list[str], home: str | Path | None = None, base_python: str | None = None,
           inherit: bool = False, system_site_packages: bool = False, folder: str | Path | None = None, force: bool = False,
           say: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the environment (venv, then pip), check it with the probe, record it; its record.
    A failure removes the half-made venv and is one UsageError."""
    check_name(name)
    if not requirements:
        raise UsageError("tbd env create needs --framework REQUIREMENT, e.g. --framework torch==2.11.0 or --framework mxnet==1.9.1")
    record_path = envs_dir(home) / f"{name}.json"
    venv = Path(folder).expanduser().resolve() if folder else envs_dir(home) / name
    if venv.exists() and not (venv / ENV_FILE).is_file():  # --force removes environments tbd made, never other folders
        raise UsageError(f"{venv} exists and is not an environment tbd made (no {ENV_FILE} in it); give --dir a new folder")
    if (record_path.exists() or venv.exists()) and not force:
        raise UsageError(f"environment '{name}' exists ({venv}); use --force to make it again, or another name")
    base = interpreters.resolve_path(base_python) if base_python else sys.executable
    facts = interpreters.probe(base)
    if interpreters.python_version(facts)[:2] < interpreters.MIN_PYTHON:
        raise UsageError(f"--base-python {base} is Python {facts['python']}; tbd's core needs Python 3.11 or newer")
    if inherit and interpreters.python_version(facts)[:2] != sys.version_info[:2]:
        raise UsageError(f"--inherit shares this Python's packages ({sys.version.split()[0]}), which {base} (Python {facts['python']}) "
                         "cannot load; drop --inherit or --base-python")
    plugins = [p for p in (plugin_for(r) for r in requirements) if p is not None]
    if not plugins:
        say(f"note: no framework plugin of tbd uses {', '.join(requirements)}; the environment can run workloads only if it has one")
    pins = [pin for p in plugins for pin in p.env_requirements]
    if force:
        shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = str(venv / "bin" / "python")
    try:
        # With --inherit, pip comes from the inherited packages (ensurepip would take longer than the rest).
        _run([base, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []),
              *(["--without-pip"] if inherit else []), str(venv)], "creating the venv", say)
        if inherit:
            site_dir = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           capture_output=True, text=True, check=True).stdout.strip())
            inherited = [p for p in site.getsitepackages() if os.path.isdir(p)]
            (site_dir / "_tbd_inherit.pth").write_text("".join(f"{p}\n" for p in inherited))
        checkout = interpreters.source_checkout()
        tbd_req = ["-e", str(checkout)] if checkout else [f"tbd=={__version__}"]
        # With --inherit and a recent enough setuptools there, that setuptools builds tbd: nothing is downloaded for it.
        local_build = inherit and _setuptools_builds_wheels()
        _run([python, "-m", "pip", "install", "--disable-pip-version-check", *(["--no-build-isolation"] if local_build else []),
              *tbd_req, *requirements, *pins], "installing tbd's core and " + " ".join(requirements), say)
        interpreters._cache.clear()
        facts = interpreters.probe(python, tuple(m for p in plugins for m in p.requires))
        interpreters.check_tbd(python, facts)
        if facts["absent"]:
            raise UsageError(f"the environment was made but cannot import {', '.join(facts['absent'])}; check the requirement")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    libraries = {k: v for k, v in facts["libraries"].items() if k not in ("psutil", "nvidia-ml-py")}
    record = {"name": name, "python": python, "prefix": str(venv), "requirements": list(requirements) + pins,
              "frameworks": [p.name for p in plugins], "python_version": facts["python"], "libraries": libraries,
              "inherit": inherit, "base_python": base, "tbd": str(checkout) if checkout else f"tbd=={__version__}",
              "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (venv / ENV_FILE).write_text(json.dumps(record, indent=1))
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))
    return record


def label(python: str | None, record: dict[str, Any] | None = None) -> str:
    """A short name for the interpreter of a run: 'current' for the one running tbd, else the
    environment's name (from its record, or its venv folder's)."""
    if python is None:
        return "current"
    env = (record or {}).get("environment") or {}
    return env.get("env_name") or name_of(str(Path(python).parent.parent)) or str(Path(python).parent.parent.name or python)


def tag(record: dict[str, Any]) -> str:
    """' @NAME' for a run in another environment (config.python), '' otherwise: for labels."""
    python = (record.get("config") or {}).get("python")
    return "" if python is None else f" @{label(python, record)}"
