"""A second Python environment for the tests: made once per session by `tbd env create` with
--inherit (the same torch, another path: the venv sees this interpreter's packages behind its
own, so pip installs only tbd's light core, from this checkout). About 10 s."""

import json

import pytest

from tbd.results import envs


@pytest.fixture(scope="session")
def second_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("envs-home")
    return envs.create("second", ["torch"], home=home, inherit=True, say=lambda line: None)


@pytest.fixture
def registered_second(tbd_home, second_env):
    """The session's environment recorded in this test's TBD_HOME, so `--env second` finds it."""
    folder = tbd_home / "envs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "second.json").write_text(json.dumps(second_env))
    return second_env
