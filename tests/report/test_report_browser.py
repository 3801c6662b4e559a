"""The report in a real browser: headless Chromium (Debian package `chromium`; .ci/run installs
it) renders it with every section, logs no console message, and the screenshot is not blank.

Skips with the reason when Chromium is absent outside CI; fails when CI=true and it is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_report_html import report_records

from tbd.report.html import SECTIONS, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0")


@pytest.fixture
def chromium():
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI=true but chromium is not installed; .ci/run installs it with apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this test")


def browse(chromium: str, url: str, tmp_path, *mode: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *mode, url],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """Chromium logs every console message (errors, uncaught exceptions) as a CONSOLE line."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def test_report_renders_without_console_errors_and_is_not_blank(chromium, tmp_path):
    path = write_report(report_records(), tmp_path / "site" / "report.html", "browser test")
    url = path.resolve().as_uri()
    dom = browse(chromium, url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid, _ in SECTIONS:
        assert re.search(rf"<section id=\"{sid}\"", dom.stdout), f"section {sid} missing from the rendered DOM"
    assert dom.stdout.count("<img") == 5
    assert console_messages(dom.stderr) == []
    shot = tmp_path / "shot.png"
    res = browse(chromium, url, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    colors = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colors) > 200, f"screenshot looks blank ({len(colors)} distinct colors)"


def test_the_console_check_catches_errors(chromium, tmp_path):
    """Guard the guard: a page with a script error does produce CONSOLE lines."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    res = browse(chromium, bad.resolve().as_uri(), tmp_path, "--dump-dom")
    assert any("undefinedFunction" in line for line in console_messages(res.stderr))
