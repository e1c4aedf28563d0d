"""`corednsprobe run` at start-up: a busy API server is waited for, a refusal is not."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import urllib.request
from pathlib import Path

from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Command, communicate_within


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


async def _start_run(kubeconfig: Path, port: int) -> asyncio.subprocess.Process:
    env = {**Command().env, "COREDNSPROBE_LISTEN": f"127.0.0.1:{port}",
           "COREDNSPROBE_REMEDIATION": "off", "COREDNSPROBE_LOG_FORMAT": "json"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "run", "--kubeconfig", str(kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)


async def test_a_busy_api_at_start_is_waited_for_then_run_serves(sandbox: Sandbox,
                                                                 tmp_path: Path) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    sandbox.fail_requests(4, 503)  # the first four requests: the access check's
    port = _free_port()
    proc = await _start_run(kubeconfig, port)
    try:
        async with asyncio.timeout(60):
            while not _ready(port):
                assert proc.returncode is None, "run exited instead of waiting"
                await asyncio.sleep(0.2)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    code, _, err = await communicate_within(proc, 30)
    assert code == 0, err
    busy = [line for line in err.splitlines() if '"cluster_busy"' in line]
    assert busy and "503" in busy[0], err


async def test_refused_credentials_exit_3_at_once_without_waiting(sandbox: Sandbox,
                                                                  tmp_path: Path) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc", token="not-a-token")
    proc = await _start_run(kubeconfig, _free_port())
    code, _, err = await communicate_within(proc, 20)
    assert code == 3, err
    assert "refused the credentials" in err and "cluster_busy" not in err
