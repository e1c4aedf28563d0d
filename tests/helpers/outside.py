"""A place outside the cluster for the netns sandbox: a network namespace whose
processes reach the API server and (optionally) the node and LoadBalancer
addresses, but never the pod IPs or the ClusterIPs -- as a laptop with a
kubeconfig, or a VM beside the cluster, stands.

Owns: a namespace and a veth pair (host side ``<name>h`` with ``host_address``, the
namespace's ``eth0`` with ``address``, default route via the host), and an nft table
in the host's forward path that lets through only connections the host DNATs (a
NodePort or LoadBalancer frontend, with ``frontends=True``) and their replies; with
``frontends`` the host side and the sandbox's bridge forward (per interface, never the
host-wide switch). Everything is removed at the end: processes in the namespace, the
namespace, the veth, the table, the forwarding flags it set.

Use (the sandbox must listen on ``host_address``)::

    with outside.Outside() as out:
        async with Sandbox(NetnsBackend(), SandboxConfig(host=out.host_address, ...)):
            out.allow_frontends(sandbox.backend)      # only for exposed set-ups
            proc = await out.spawn(*Command.argv("run", "--kubeconfig", kc), env=env)

Never does: touch the host's own addresses, routes or global sysctls, or let the
namespace reach anything but the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.netns import run

_numbers = itertools.count(1)


class Outside:
    """An outside-the-cluster network namespace (root); a context manager."""

    def __init__(self) -> None:
        n = next(_numbers)
        pid = os.getpid()
        self.name = f"cdo{pid % 100000}x{n}"  # <= 15 characters with the "h" suffix
        self.host_link = f"{self.name}h"
        self.table = self.name
        octet3, octet4 = (pid + n) % 250 + 1, (n * 4) % 248
        self.host_address = f"100.79.{octet3}.{octet4 + 1}"
        self.address = f"100.79.{octet3}.{octet4 + 2}"
        self._forwarding: list[tuple[Path, str]] = []
        self._made = False

    # ------------------------------------------------------------------ life

    def __enter__(self) -> Outside:
        run("ip", "netns", "add", self.name)
        self._made = True
        try:
            run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", "eth0",
                "netns", self.name)
            run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link)
            run("ip", "link", "set", self.host_link, "up")
            run("ip", "-n", self.name, "link", "set", "lo", "up")
            run("ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", "eth0")
            run("ip", "-n", self.name, "link", "set", "eth0", "up")
            run("ip", "-n", self.name, "route", "add", "default", "via", self.host_address)
            run("nft", "-f", "-", stdin=f"""
table inet {self.table} {{
  chain forward {{
    type filter hook forward priority -5; policy accept;
    iifname "{self.host_link}" ct status dnat accept
    iifname "{self.host_link}" drop
    oifname "{self.host_link}" ct state established,related accept
    oifname "{self.host_link}" drop
  }}
}}
""")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._made:
            return
        self._made = False
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True, timeout=30).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        for path, old in reversed(self._forwarding):
            with contextlib.suppress(OSError):
                path.write_text(old)
        self._forwarding.clear()
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True,
                       timeout=30)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    # ------------------------------------------------------------------ use

    def allow_frontends(self, backend: Any) -> None:
        """Let the namespace reach the netns backend's NodePorts (node addresses) and
        LoadBalancer addresses: forwarding on this veth and on the sandbox's bridge (the
        host DNATs those frontends to pods; pod IPs and ClusterIPs stay dropped)."""
        for link in (self.host_link, backend.bridge):
            path = Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding")
            self._forwarding.append((path, path.read_text().strip()))
            path.write_text("1")

    def argv(self, *argv: str) -> list[str]:
        """``argv`` as run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    async def spawn(self, *argv: str, env: dict[str, str] | None = None,
                    ) -> asyncio.subprocess.Process:
        """Start ``argv`` inside the namespace, stdout and stderr piped."""
        return await asyncio.create_subprocess_exec(
            *self.argv(*argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env)

    def reaches_udp(self, address: str, port: int = 53) -> bool:
        """Whether a DNS question from inside gets any answer within a second."""
        done = subprocess.run(self.argv("dig", "+tries=1", "+time=1", "+notcp", "-p", str(port),
                                        f"@{address}", "kubernetes.default.svc.cluster.local"),
                              capture_output=True, text=True, timeout=10)
        return done.returncode == 0


# ---------------------------------------------------------------------- harness

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def sandbox_outside(tmp_path: Path, replicas: int = 3, **config: Any,
                          ) -> AsyncIterator[tuple[Outside, Any, Path]]:
    """An Outside, a netns sandbox (real unbound pods) whose API server listens on the
    Outside's host address, and an admin kubeconfig pointing there."""
    from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
    from corednsprobe.sandbox.controllers import Timings
    from corednsprobe.sandbox.netns import NetnsBackend

    with Outside() as out:
        settings = SandboxConfig(replicas=replicas, termination_grace_seconds=1,
                                 host=out.host_address,
                                 timings=Timings(readiness_period=0.1, resync_period=1.0),
                                 **config)
        async with Sandbox(NetnsBackend(domain="cluster.local"), settings) as sandbox:
            await sandbox.wait_ready(within=30)
            yield out, sandbox, sandbox.write_kubeconfig(tmp_path / "admin-kubeconfig")


def corednsprobe_env(**env: str) -> dict[str, str]:
    """This checkout's corednsprobe, JSON logs, and ``env`` on top."""
    return {**os.environ, "PYTHONPATH": str(REPO), "COREDNSPROBE_LOG_FORMAT": "json", **env}


class ServiceInside:
    """``corednsprobe run`` in an Outside: its log events as they come, its /status."""

    def __init__(self, out: Outside, *args: str, env: dict[str, str]) -> None:
        self.out, self.args = out, args
        self.env = {**env, "COREDNSPROBE_LISTEN": f"{out.address}:0"}  # reachable from here
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stdout: asyncio.Task[bytes] | None = None
        self.listen = ""

    async def __aenter__(self) -> ServiceInside:
        self.proc = await self.out.spawn(sys.executable, "-m", "corednsprobe", "run", *self.args,
                                         env=corednsprobe_env(**self.env))
        self._reader = asyncio.create_task(self._read())
        assert self.proc.stdout is not None
        self._stdout = asyncio.create_task(self.proc.stdout.read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)
                if event.get("event") == "service_started":
                    self.listen = str(event.get("listen"))

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)

    async def started(self, within: float = 60.0) -> None:
        """Wait for the HTTP server (or the process's end: AssertionError with its log)."""
        async with asyncio.timeout(within):
            while not self.listen:
                assert self.proc is not None
                if self.proc.returncode is not None or (self._reader and self._reader.done()):
                    raise AssertionError("corednsprobe run ended:\n" + "\n".join(self.lines))
                await asyncio.sleep(0.05)

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{self.listen}/status", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    async def until(self, predicate: Callable[[dict[str, Any]], bool], within: float,
                    ) -> dict[str, Any]:
        """Poll /status until ``predicate`` holds for it; the document that satisfied it
        (AssertionError with the last document and log lines when it does not in time)."""
        doc: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    doc = await self.status()
                    if predicate(doc):
                        return doc
                    await asyncio.sleep(0.25)
        except TimeoutError:
            raise AssertionError(f"not within {within:g} s; /status: {json.dumps(doc)}\n"
                                 + "\n".join(self.lines[-30:])) from None

    async def exit_code(self, within: float = 30.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._reader, self._stdout):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def run_inside(out: Outside, *args: str, within: float = 60.0,
                     **env: str) -> tuple[int, str, str]:
    """``corednsprobe ARGS`` in ``out``: (exit code, stdout, stderr)."""
    proc = await out.spawn(sys.executable, "-m", "corednsprobe", *args,
                           env=corednsprobe_env(**env))
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, stdout.decode(), stderr.decode()
