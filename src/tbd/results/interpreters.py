"""Runs in another Python environment: `tbd run WORKLOAD --python /path/to/venv/bin/python`.

A run's child process may be started with another interpreter, one that has tbd's light core and
a framework installed (another PyTorch version, MXNet with its old numpy). Before anything runs,
`check_config` asks that interpreter, in a short subprocess (`probe`), what it has: its Python,
its tbd (version, record schema, run options) and which frameworks' modules it can import. A
missing, broken or incompatible interpreter is one UsageError naming the fix.

The probe imports tbd's light core there and looks frameworks up with `importlib.util.find_spec`,
so it imports no framework and takes a fraction of a second. Results are cached per interpreter
for the life of this process (a sweep checks each of its lines).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tbd.errors import UsageError
from tbd.version import __version__

MIN_PYTHON = (3, 11)  # pyproject's requires-python
PROBE_TIMEOUT_S = 120.0

# Runs in the other interpreter: %-formatting only, so that an old Python still answers with its
# version instead of a SyntaxError. argv: modules to look up there.
PROBE = r"""
import json, sys
out = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable, "prefix": sys.prefix}
if sys.version_info[:2] >= (3, 11):
    try:
        import dataclasses, importlib.util, os
        import tbd
        from tbd import registry
        from tbd.config import RunConfig
        from tbd.results import environment
        from tbd.results.record import SCHEMA_VERSION
        from tbd.version import __version__
    except Exception as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    else:
        out.update(tbd_version=__version__, schema_version=SCHEMA_VERSION, tbd_path=os.path.dirname(tbd.__file__),
                   config_fields=[f.name for f in dataclasses.fields(RunConfig)])
        libraries = list(environment.CORE_LIBRARIES)
        out["frameworks"] = {}
        for name in registry.framework_names():
            out["frameworks"][name] = registry.missing_modules(name)
            libraries += list(registry.framework(name).libraries)
        out["libraries"] = environment.library_versions(tuple(libraries))
        out["absent"] = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
print("TBD-PROBE " + json.dumps(out))
"""

_cache: dict[tuple, dict[str, Any]] = {}


def resolve_path(python: str) -> str:
    """An interpreter given on the command line as an absolute path. Symlinks are kept: a venv's
    `bin/python` links to its base interpreter, but only through the link is it the venv."""
    text = os.path.expanduser(str(python).strip())
    if not text:
        raise UsageError("--python needs the path of a Python interpreter, e.g. --python /path/to/venv/bin/python")
    if os.sep not in text:  # a command name: look it up on PATH, as a shell would
        found = shutil.which(text)
        if found is None:
            raise UsageError(f"--python {text}: no such command on PATH; give the interpreter's path, e.g. /path/to/venv/bin/python")
        text = found
    return os.path.abspath(text)


def install_hint(python: str) -> str:
    """How to put this tbd's light core into another interpreter."""
    checkout = source_checkout()
    what = f"-e {checkout}" if checkout else f"'tbd=={__version__}'"
    return f"{python} -m pip install {what}"


def source_checkout() -> Path | None:
    """The source tree this tbd runs from (where pyproject.toml is), or None for an installed tbd."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "tbd").is_dir() else None


def probe(python: str, modules: tuple[str, ...] = ()) -> dict[str, Any]:
    """What `python` has (see PROBE); raises UsageError when it does not exist or does not run."""
    key = (python, tuple(modules))
    if key in _cache:
        return _cache[key]
    if not os.path.exists(python):
        raise UsageError(f"--python {python}: no such file; give the path of a Python interpreter (e.g. /path/to/venv/bin/python), "
                         "or make an environment with 'tbd env create NAME --framework REQUIREMENT'")
    if os.path.isdir(python):
        raise UsageError(f"--python {python} is a folder; give the interpreter inside it, e.g. {os.path.join(python, 'bin', 'python')}")
    try:
        done = subprocess.run([python, "-c", PROBE, *modules], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except PermissionError:
        raise UsageError(f"--python {python} is not executable; give a Python interpreter (chmod +x, or the venv's bin/python)") from None
    except OSError as exc:
        raise UsageError(f"--python {python} cannot be started ({exc.strerror or exc}); give a working Python interpreter") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"--python {python} did not answer within {PROBE_TIMEOUT_S:.0f} s; check that it is a working Python interpreter") from None
    line = next((x for x in done.stdout.splitlines() if x.startswith("TBD-PROBE ")), None)
    if line is None:
        said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1][:200]
        raise UsageError(f"--python {python} does not run as Python (exit {done.returncode}: {said}); "
                         "give a working interpreter, or recreate its environment")
    facts = json.loads(line[len("TBD-PROBE "):])
    _cache[key] = facts
    return facts


def python_version(facts: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(x) for x in facts["python"].split("."))


def check_tbd(python: str, facts: dict[str, Any]) -> None:
    """The other interpreter runs a tbd this one can talk to; else one UsageError naming the fix."""
    if python_version(facts)[:2] < MIN_PYTHON:
        raise UsageError(f"--python {python} is Python {facts['python']}; tbd's core needs Python "
                         f"{'.'.join(map(str, MIN_PYTHON))} or newer: make the environment from a newer Python")
    if "error" in facts:
        raise UsageError(f"--python {python} cannot import tbd ({facts['error'][:200]}); install tbd's light core there: {install_hint(python)}")
    from tbd.results.record import SCHEMA_VERSION

    if facts["tbd_version"] != __version__ or facts["schema_version"] != SCHEMA_VERSION:
        raise UsageError(f"--python {python} has tbd {facts['tbd_version']} (record schema {facts['schema_version']}), this is tbd "
                         f"{__version__} (schema {SCHEMA_VERSION}); install the same tbd there: {install_hint(python)}")


def check_config(config) -> dict[str, Any]:
    """Check that `config.python` can run `config`: it exists, runs Python 3.11+, has a compatible
    tbd that knows every option the config sets, and can import the framework and what the
    workload needs. Returns the probe's facts."""
    from tbd import registry
    from tbd.config import RunConfig

    python = config.python
    spec = registry.get_spec(config.workload)
    plugin = registry.framework(config.framework)
    facts = probe(python, tuple(spec.requires))
    check_tbd(python, facts)
    defaults = RunConfig(workload=config.workload).to_dict()
    unknown = [k for k, v in config.to_dict().items() if k not in facts["config_fields"] and v != defaults.get(k)]
    if unknown:
        raise UsageError(f"the tbd of --python {python} ({facts['tbd_path']}) is older than this one: it has no run option "
                         f"'{unknown[0]}'; install this tbd there: {install_hint(python)}")
    if config.framework not in facts["frameworks"]:
        raise UsageError(f"the tbd of --python {python} has no '{config.framework}' plugin; install this tbd there: {install_hint(python)}")
    missing = facts["frameworks"][config.framework]
    if missing:
        dist = plugin.libraries[0] if plugin.libraries else config.framework
        raise UsageError(f"framework '{config.framework}' is not installed in {python} (missing {', '.join(missing)}); install it there "
                         f"({python} -m pip install {dist}) or make an environment: tbd env create NAME --framework {dist}")
    if facts["absent"]:
        raise UsageError(f"workload '{config.workload}' needs {', '.join(facts['absent'])}, not installed in {python}; "
                         f"install it there: {python} -m {spec.install or 'pip install ' + ' '.join(facts['absent'])}")
    return facts


def installed_frameworks(python: str) -> list[str]:
    """Frameworks whose modules the other interpreter can import (for a sweep's '*')."""
    facts = probe(python)
    check_tbd(python, facts)
    return [name for name, missing in facts["frameworks"].items() if not missing]


def same_interpreter(python: str | None) -> bool:
    return python is None or os.path.abspath(python) == os.path.abspath(sys.executable)
