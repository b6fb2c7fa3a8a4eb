"""The Autobahn|Testsuite fuzzing client (PyPI `autobahntestsuite`, Python 2 code) against Edge's echo route:
every case that fits in CI — all but the 9.x performance series and the 12.x/13.x compression series, which
`bench/autobahn/campaign --compression` runs — must be OK, NON-STRICT or INFORMATIONAL, none FAILED.

The suite needs Python 2.7.18 (pyenv) and a virtualenv with pinned dependencies (bench/autobahn/run makes it
from PyPI once); without either the test is skipped, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "autobahn" / "run"


def python27() -> str | None:
    if os.environ.get("AUTOBAHN_PY27"):
        return os.environ["AUTOBAHN_PY27"]
    candidate = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions" / "2.7.18" / "bin" / "python2.7"
    if candidate.exists():
        return str(candidate)
    return shutil.which("python2.7")


@pytest.fixture(scope="module")
def autobahn_ready():
    if python27() is None:
        pytest.skip("Python 2.7.18 is not installed (pyenv install 2.7.18): the Autobahn suite is Python 2 code")
    setup = subprocess.run([str(RUN), "--setup-only"], capture_output=True, text=True, timeout=900)
    if setup.returncode != 0:
        pytest.skip(f"the Autobahn virtualenv could not be made: {setup.stderr.strip()[-400:]}")


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_autobahn_echo_route(autobahn_ready, edge_factory, tmp_path, scheme):
    server = edge_factory.start(config="""
[[route]]
path = "/echo"
websocket = { echo = true, max_message_bytes = 16777216, max_frame_bytes = 16777216 }
""")
    port = server.http_port if scheme == "ws" else server.https_port
    out = tmp_path / "report"
    result = subprocess.run(
        [str(RUN), "--target", f"edge-{scheme}={scheme}://127.0.0.1:{port}/echo", "--cases", "*",
         "--exclude", "9.*,12.*,13.*", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    summary = json.loads((out / "summary.json").read_text())[f"edge-{scheme}"]
    assert summary["failed"] == [] and summary["missing"] == [], result.stdout[-3000:]
    assert summary["counts"]["FAILED"] == 0
    assert summary["cases_run"] >= 240  # the suite's cases but 9.x, 12.x and 13.x
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
