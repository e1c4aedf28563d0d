"""Where `run` listens when COREDNSPROBE_LISTEN is unset: loopback off-cluster, all in-cluster.

`/status` shows pod IPs, nodes and the remediation history: `run --kubeconfig`
on a workstation must not offer it to the network. Each test runs the sandbox
and `corednsprobe run` as processes in a network namespace of its own, so the
default port 9180 is free there and the listening sockets can be read with
`ss` without seeing anyone else's; the namespace and every process in it are
removed at the end. The in-cluster case mounts a service-account directory at
the standard path in a private mount namespace of the `run` process only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.helpers import netns

TOOLS = ("ip", "ss", "unshare", "mount", "curl")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason=f"needs root and {', '.join(TOOLS)} (a network and a mount namespace)")

ROOT = Path(__file__).resolve().parents[2]
PORT = 9180
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _env(**extra: str) -> dict[str, str]:
    drop = ("COREDNSPROBE_", "KUBERNETES_SERVICE_", "KUBECONFIG")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PYTHONPATH=str(ROOT), COREDNSPROBE_REMEDIATION="off",
               COREDNSPROBE_INTERVAL="0.5", COREDNSPROBE_TIMEOUT="0.2", **extra)
    return env


@pytest.fixture
def ns() -> Iterator[str]:
    with netns.namespace() as name:
        yield name


async def _start(ns: str, *cmd: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, *cmd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def _stop(proc: asyncio.subprocess.Process) -> str:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode(errors="replace")


@contextlib.asynccontextmanager
async def _sandbox(ns: str, tmp: Path) -> AsyncIterator[Path]:
    """`corednsprobe sandbox` in ``ns``; yields its kubeconfig once it is ready."""
    kubeconfig = tmp / "kubeconfig"
    proc = await _start(ns, sys.executable, "-m", "corednsprobe", "sandbox", "--pods", "1",
                        "--kubeconfig-out", str(kubeconfig), env=_env())
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while b"sandbox API:" not in await proc.stdout.readline():
                assert proc.returncode is None, "the sandbox ended early"
        yield kubeconfig
    finally:
        await _stop(proc)


def _listening(ns: str) -> set[str]:
    """Local addresses of the TCP sockets listening on PORT in ``ns``."""
    out = netns.run("ip", "netns", "exec", ns, "ss", "-ltnH", f"sport = :{PORT}")
    return {line.split()[3] for line in out.splitlines() if line.strip()}


async def _served_on(ns: str, proc: asyncio.subprocess.Process) -> set[str]:
    """Wait until `run` answers /readyz on loopback; then where it listens."""
    async with asyncio.timeout(60):
        while True:
            if proc.returncode is not None:
                pytest.fail(f"run exited {proc.returncode}: {await _stop(proc)}")
            curl = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-o", "/dev/null", "-w",
                "%{http_code}", f"http://127.0.0.1:{PORT}/readyz",
                stdout=asyncio.subprocess.PIPE)
            code, _ = await curl.communicate()
            if code == b"200":
                return _listening(ns)
            await asyncio.sleep(0.2)


async def _where_run_listens(ns: str, *cmd: str, env: dict[str, str]) -> tuple[set[str], str]:
    """Start `run` (``cmd``) in ``ns``; where it listens once it answers; its log."""
    proc = await _start(ns, *cmd, env=env)
    try:
        addresses = await _served_on(ns, proc)
    finally:
        log = await _stop(proc)
    assert proc.returncode == 0, log  # SIGTERM: a clean exit
    return addresses, log


def _run(kubeconfig: Path | None = None) -> tuple[str, ...]:
    cluster = ("--kubeconfig", str(kubeconfig)) if kubeconfig else ()
    return (sys.executable, "-m", "corednsprobe", "run", *cluster)


async def test_run_with_a_kubeconfig_listens_on_loopback_only(ns: str, tmp_path: Path) -> None:
    async with _sandbox(ns, tmp_path) as kubeconfig:
        addresses, log = await _where_run_listens(ns, *_run(kubeconfig), env=_env())
    assert addresses == {f"127.0.0.1:{PORT}"}
    assert f"127.0.0.1:{PORT}" in log  # service_started says where


async def test_run_on_the_in_cluster_service_account_listens_on_every_interface(
        ns: str, tmp_path: Path) -> None:
    async with _sandbox(ns, tmp_path) as kubeconfig:
        conf = yaml.safe_load(kubeconfig.read_text())
        api = urlsplit(conf["clusters"][0]["cluster"]["server"])
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text(conf["users"][0]["user"]["token"])
        (account / "ca.crt").write_bytes(
            base64.b64decode(conf["clusters"][0]["cluster"]["certificate-authority-data"]))
        (account / "namespace").write_text("kube-system")
        # the token path is fixed: mount it in the run process's own mount namespace only
        script = ('mount -t tmpfs tmpfs /run && mkdir -p "$(dirname "$SA_DIR")" && '
                  'ln -s "$ACCOUNT" "$SA_DIR" && exec "$@"')
        env = _env(KUBERNETES_SERVICE_HOST=str(api.hostname),
                   KUBERNETES_SERVICE_PORT=str(api.port), SA_DIR=SA_DIR, ACCOUNT=str(account))
        addresses, log = await _where_run_listens(
            ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *_run(), env=env)
    assert addresses == {f"0.0.0.0:{PORT}"}
    assert f"0.0.0.0:{PORT}" in log  # service_started says where


async def test_an_explicit_listen_address_wins_off_cluster(ns: str, tmp_path: Path) -> None:
    async with _sandbox(ns, tmp_path) as kubeconfig:
        addresses, _ = await _where_run_listens(
            ns, *_run(kubeconfig), env=_env(COREDNSPROBE_LISTEN=f"0.0.0.0:{PORT}"))
    assert addresses == {f"0.0.0.0:{PORT}"}
