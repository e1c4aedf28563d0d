"""What people and Prometheus read, and how the processes start and stop.

Uses the in-process DNS backend: no root needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Start
from tests.unit.test_metrics import EXPECTED as DOCUMENTED


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_metrics_parse_and_have_every_metric(start: Start) -> None:
    c = await start(replicas=2, backend="inprocess")
    await c.until(lambda s: s.state.rounds >= 2, within=20)
    status, ctype, text = await fetch(c.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names >= DOCUMENTED
    assert 'corednsprobe_targets{target_kind="pod"} 2.0' in text
    assert 'outcome="ok"' in text
    if shutil.which("promtool"):
        proc = await asyncio.create_subprocess_exec(
            "promtool", "check", "metrics", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await proc.communicate(text.encode())
        assert proc.returncode == 0, out.decode()


async def test_status_health_and_readiness(start: Start) -> None:
    c = await start(replicas=2, backend="inprocess")
    await c.until(lambda s: s.state.rounds >= 1, within=20)
    status, ctype, body = await fetch(c.url + "/status")
    assert status == 200 and ctype.startswith("application/json")
    doc = json.loads(body)
    assert doc["targets_state"] == "ok"
    assert doc["diagnosis"]["state"] in {"healthy", "syncing"}
    assert set(doc["diagnosis"]) >= {"state", "reason", "candidates", "evidence"}
    kinds = sorted(t["kind"] for t in doc["targets"])
    assert kinds == ["pod", "pod", "service"]
    pod = next(t for t in doc["targets"] if t["kind"] == "pod")
    assert set(pod) >= {"name", "address", "port", "node", "health", "window", "last"}
    assert set(pod["window"]) >= {"seconds", "samples", "failures", "failure_ratio",
                                  "udp_only", "outcomes"}
    assert pod["last"] and pod["last"][0]["outcome"] == "ok"
    assert doc["settings"]["interval"] == 0.5
    assert (await fetch(c.url + "/healthz"))[0] == 200
    assert (await fetch(c.url + "/readyz"))[0] == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREDNSPROBE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(extra)
    return env


async def _wait_http(url: str, within: float) -> str:
    async with asyncio.timeout(within):
        while True:
            try:
                status, _, body = await fetch(url)
                if status == 200:
                    return body
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def test_run_exits_0_on_sigterm(start: Start, tmp_path: Path) -> None:
    c = await start(replicas=2, backend="inprocess")
    kubeconfig = c.sandbox.write_kubeconfig(tmp_path / "run.kubeconfig")
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "run", "--kubeconfig", str(kubeconfig),
        env=_env(COREDNSPROBE_LISTEN=f"127.0.0.1:{port}", COREDNSPROBE_INTERVAL="0.5",
                 COREDNSPROBE_LOG_FORMAT="json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = await _wait_http(f"http://127.0.0.1:{port}/metrics", within=30)
        assert "corednsprobe_rounds_total" in body
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()
        events = [json.loads(line)["event"] for line in err.decode().splitlines()
                  if line.startswith("{")]
        assert "service_started" in events and events[-1] == "service_stopped"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_without_a_cluster_exits_3_and_explains(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "run", "--kubeconfig",
        str(tmp_path / "missing"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3
    assert "no kubeconfig at" in err.decode() and "corednsprobe demo" in err.decode()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the sandbox's TLS needs openssl")
async def test_demo_evicts_the_broken_pod_and_stops_cleanly_on_sigint() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "demo", "--pods", "2", "--fault",
        "0=udp-drop@1", env=_env(COREDNSPROBE_LISTEN=f"127.0.0.1:{port}",
                                 COREDNSPROBE_INTERVAL="0.5", COREDNSPROBE_WINDOW="3",
                                 COREDNSPROBE_MIN_POD_AGE="0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    status_url = f"http://127.0.0.1:{port}/status"
    try:
        body = await _wait_http(f"http://127.0.0.1:{port}/metrics", within=30)
        assert "corednsprobe_probes_total" in body
        async with asyncio.timeout(40):
            while True:
                doc = json.loads(await _wait_http(status_url, 5))
                actions = doc["remediation"]["budget"]["last_actions"]
                if any(a["result"] == "done" for a in actions):
                    break
                await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a few rounds more: the replacement answers
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert f"http://127.0.0.1:{port}/metrics" in text
        assert "restart candidates: " in text and "timeout (udp only)" in text
        evicted = actions[-1]["pod"]
        assert f"evict {evicted} → done" in text
        assert "diagnosis: healthy" in text.rsplit("round", 1)[-1]  # after the replacement
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the sandbox's TLS needs openssl")
async def test_a_busy_listen_address_exits_2_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corednsprobe", "demo", "--duration", "5",
            env=_env(COREDNSPROBE_LISTEN=f"127.0.0.1:{port}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 2, text
    assert f"cannot listen on 127.0.0.1:{port}" in text and "COREDNSPROBE_LISTEN" in text
    assert "Traceback" not in text
