"""A client that goes away is a debug line, never a traceback: the sandbox's API server
when a watcher hangs up before its answer starts, and `targets` on its way out."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from corednsprobe.sandbox.cluster import Sandbox

ROOT = str(Path(__file__).resolve().parents[2])


async def hang_up_on_a_watch(sandbox: Sandbox) -> None:
    url = urlsplit(sandbox.url)
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection(
        url.hostname, url.port, ssl=tls if url.scheme == "https" else None)
    writer.write(f"GET /api/v1/namespaces/kube-system/pods?watch=true HTTP/1.1\r\n"
                 f"Host: {url.netloc}\r\nAuthorization: Bearer {sandbox.admin_token}\r\n"
                 "\r\n".encode())
    await writer.drain()
    writer.close()  # gone before the answer's headers are written


async def test_the_api_server_logs_no_traceback_when_a_watcher_hangs_up(
        sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(30):
        await hang_up_on_a_watch(sandbox)
    await asyncio.sleep(0.5)
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def test_targets_exits_without_ssl_noise(sandbox: Sandbox, tmp_path: Path) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kubeconfig")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREDNSPROBE_")}
    env["PYTHONPATH"] = ROOT
    for _ in range(12):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corednsprobe", "targets", "--kubeconfig", str(kubeconfig),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert not err, err.decode()
