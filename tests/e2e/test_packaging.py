"""Packaging: the root filesystem packaging/assemble-rootfs makes (what scripts/build-image puts in the OCI image
and packaging/Containerfile describes) runs Edge by itself under chroot, and the systemd unit is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require_binary
from upstreams import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_assembled_root_filesystem_runs_edge_alone(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    rootfs = tmp_path / "rootfs"
    subprocess.run([str(ROOT / "packaging/assemble-rootfs"), str(require_binary()), str(rootfs)], check=True, timeout=120)
    assert (rootfs / "usr/local/bin/edge").exists()
    assert "nobody:x:65534:65534:" in (rootfs / "etc/passwd").read_text()
    # Only what the binary loads: no shell, no package manager.
    assert not (rootfs / "bin/sh").exists() and not (rootfs / "usr/bin").exists()
    proc = rootfs / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    port = free_port()
    server = subprocess.Popen(
        ["chroot", str(rootfs), "/usr/local/bin/edge", "serve", "--http", f"127.0.0.1:{port}", "--https",
         f"127.0.0.1:{free_port()}", "--admin", "none", "--state-dir", "/var/lib/edge"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                    assert answer.status == 200 and answer.read() == b"ok\n"
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
                time.sleep(0.05)
        # The self-signed certificate was made inside the image's state folder.
        assert (rootfs / "var/lib/edge/self-signed-cert.pem").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
        subprocess.run(["umount", str(proc)], check=False)


def test_the_systemd_unit_is_valid(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze")
    unit = tmp_path / "edge.service"
    # systemd-analyze checks that ExecStart's binary exists: point the unit at the binary under test.
    unit.write_text((ROOT / "packaging/edge.service").read_text().replace("/usr/local/bin/edge", str(require_binary())))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = unit.read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text and "NoNewPrivileges=yes" in text
