"""Fixtures for the sandbox's API side: a running sandbox (NullBackend), raw
HTTPS with the sandbox's CA, the real kubectl and the real kubernetes_asyncio
client. Everything a test starts is stopped at teardown, even on failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config

from corednsprobe.sandbox.apiserver import WatchTimings
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.service.app import serve

Obj = dict[str, Any]
MakeSandbox = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[MakeSandbox]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(replicas: int = 2, grace: int = 1, bookmark_interval: float = 60.0,
                       bookmark_lead: float = 2.0, dns_port: int = 53,
                       watch_cutoff: float | None = None, **options: Any) -> Sandbox:
            settings = SandboxConfig(
                replicas=replicas, termination_grace_seconds=grace,
                timings=Timings(readiness_period=0.05, resync_period=1.0),
                watch=WatchTimings(bookmark_interval=bookmark_interval,
                                   bookmark_lead=bookmark_lead, max_timeout=watch_cutoff),
                **options)
            sandbox = await stack.enter_async_context(Sandbox(NullBackend(port=dns_port), settings))
            await sandbox.wait_ready(within=10)
            return sandbox

        yield make


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox) -> Sandbox:
    return await make_sandbox()


async def communicate_within(process: asyncio.subprocess.Process,
                             within: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``process``; killed if it outlives ``within``."""
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def serving(settings: Any, api: Any, **kwargs: Any) -> AsyncIterator[int]:
    """The whole service (``service.app.serve``) against ``api`` for the block; yields
    the port its HTTP server listens on, and stops it as SIGTERM does at the end."""
    stop = asyncio.Event()
    port: list[int] = []
    task = asyncio.create_task(serve(settings, api, stop=stop,
                                     on_listening=lambda _service, bound: port.append(bound),
                                     **kwargs))
    try:
        await eventually(lambda: bool(port), within=10)
        yield port[0]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def eventually(predicate: Callable[[], bool], within: float = 10.0,
                     step: float = 0.02) -> None:
    """Poll ``predicate`` until it holds; TimeoutError after ``within`` seconds."""
    for _ in range(max(1, int(within / step))):
        if predicate():
            return
        await asyncio.sleep(step)
    raise TimeoutError(f"condition not met within {within} s")


class Http:
    """Raw HTTPS against the sandbox, trusting only its CA."""

    def __init__(self, sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.session = session
        self.ssl = ssl.create_default_context(cadata=sandbox.ca_pem.decode())

    def _headers(self, token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token or self.sandbox.admin_token}"}
        return {**headers, **(extra or {})}

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = None if body is None else json.dumps(body)
        wanted = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.request(method, self.sandbox.url + path, data=data,
                                        headers=self._headers(token, wanted),
                                        ssl=self.ssl) as resp:
            raw = await resp.read()
            parsed = json.loads(raw) if raw and resp.content_type == "application/json" else raw
            return resp.status, resp.headers, parsed

    async def watch(self, path: str, within: float = 10.0, stop_after: int | None = None,
                    token: str | None = None) -> tuple[int, list[Obj]]:
        """Read watch events until the server ends the stream (or ``stop_after`` events)."""
        events: list[Obj] = []
        async with asyncio.timeout(within), self.session.get(
                self.sandbox.url + path, headers=self._headers(token, None),
                ssl=self.ssl) as resp:
            if resp.status != 200:
                return resp.status, [json.loads(await resp.read())]
            async for line in resp.content:
                if line.strip():
                    events.append(json.loads(line))
                if stop_after is not None and len(events) >= stop_after:
                    break
            return resp.status, events


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(sandbox, session)


@pytest.fixture
async def raw_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.base = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache)]

    async def run(self, *args: str, within: float = 30.0) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *self.base, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return await communicate_within(process, within)

    async def json(self, *args: str) -> Obj:
        code, out, err = await self.run(*args, "-o", "json")
        assert code == 0, err
        parsed: Obj = json.loads(out)
        return parsed


@pytest.fixture
def kubectl(sandbox: Sandbox, tmp_path: Path) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kubeconfig")
    return Kubectl(kubeconfig, tmp_path / "kubectl-cache")


async def api_client_for(sandbox: Sandbox, path: Path, token: str | None = None,
                         ) -> client.ApiClient:
    sandbox.write_kubeconfig(path, token=token)
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture
async def api(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    api_client = await api_client_for(sandbox, tmp_path / "client-kubeconfig")
    async with api_client:
        yield api_client


REPO = Path(__file__).resolve().parents[2]


class Command:
    """``python -m corednsprobe …`` as a subprocess, from this checkout."""

    def __init__(self) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}

    @staticmethod
    def argv(*args: str) -> list[str]:
        return [sys.executable, "-m", "corednsprobe", *args]

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corednsprobe", *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env)

    async def run(self, *args: str, within: float = 30.0) -> tuple[int, str, str]:
        return await communicate_within(await self.start(*args), within)


@pytest.fixture
def corednsprobe() -> Command:
    return Command()
