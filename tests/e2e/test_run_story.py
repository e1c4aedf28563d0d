"""What `corednsprobe run` tells the person who starts it, in its own log lines.

Uses the in-process DNS backend: no root needed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Start
from tests.e2e.test_http_and_process import _env, _free_port, _wait_http


async def run_briefly(start: Start, tmp_path: Path, **env: str) -> list[dict[str, Any]]:
    """`run` against a sandbox until its metrics answer, then SIGTERM; its JSON log records."""
    c = await start(replicas=2, backend="inprocess")
    kubeconfig = c.sandbox.write_kubeconfig(tmp_path / "run.kubeconfig")
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "run", "--kubeconfig", str(kubeconfig),
        env=_env(COREDNSPROBE_LISTEN=f"127.0.0.1:{port}", COREDNSPROBE_INTERVAL="0.5",
                 COREDNSPROBE_LOG_FORMAT="json", COREDNSPROBE_PROBER_NAMESPACE="kube-system",
                 **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await _wait_http(f"http://127.0.0.1:{port}/metrics", within=30)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]


async def test_the_startup_line_names_mode_leader_state_and_reach(start: Start,
                                                                  tmp_path: Path) -> None:
    records = await run_briefly(start, tmp_path, COREDNSPROBE_REMEDIATION="evict")
    started = next(r for r in records if r["event"] == "service_started")
    assert started["remediation"] == "evict" and started["reach"] == "direct", started
    assert started["leader"].startswith("electing: acts only once "), started
    assert "holds Lease kube-system/corednsprobe" in started["leader"], started


async def test_the_startup_line_says_when_remediation_is_off(start: Start,
                                                             tmp_path: Path) -> None:
    records = await run_briefly(start, tmp_path, COREDNSPROBE_REMEDIATION="off")
    started = next(r for r in records if r["event"] == "service_started")
    assert (started["remediation"], started["leader"], started["reach"]) == (
        "off", "none (remediation is off)", "direct"), started
