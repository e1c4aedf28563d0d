"""pods/portforward over WebSocket (v4.channel.k8s.io), framed as the kubelet's
portforward/websocket.go frames it: a DNS-over-TCP question through the
forwarded port gets the pod's answer; a port nobody listens on is reported
on the error channel in the kubelet's words."""

from __future__ import annotations

import base64
import random
import ssl
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend

NAME = "kubernetes.default.svc.cluster.local"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    config = SandboxConfig(replicas=1, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=0.5))
    async with Sandbox(InProcessBackend(), config) as running:
        await running.wait_ready(within=10)
        yield running


def dns_query(ident: int) -> bytes:
    wire = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    for label in NAME.split("."):
        wire += bytes([len(label)]) + label.encode()
    return wire + b"\x00" + struct.pack("!HH", 1, 1)


async def forward(sandbox: Sandbox, pod: str, port: int,
                  protocol: str = "v4.channel.k8s.io") -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    context = ssl.create_default_context(cadata=sandbox.ca_pem.decode())
    ws = await session.ws_connect(
        f"{sandbox.url}/api/v1/namespaces/kube-system/pods/{pod}/portforward?ports={port}",
        protocols=(protocol,), ssl=context,
        headers={"Authorization": f"Bearer {sandbox.admin_token}"})
    return session, ws


async def frames(ws: Any, count: int) -> list[tuple[int, bytes]]:
    found = []
    while len(found) < count:
        message = await ws.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.BINARY:
            found.append((message.data[0], bytes(message.data[1:])))
        elif message.type is aiohttp.WSMsgType.TEXT:
            found.append((ord(message.data[0]) - 48, base64.b64decode(message.data[1:])))
        else:
            break
    return found


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"])
async def test_dns_over_tcp_through_the_forwarded_port(sandbox: Sandbox, protocol: str) -> None:
    pod = sandbox.dns_pods()[0]["metadata"]["name"]
    session, ws = await forward(sandbox, pod, 53, protocol)
    try:
        assert ws.protocol == protocol
        # The port as two little-endian bytes, first on the data channel, then the error one.
        assert await frames(ws, 2) == [(0, b"\x35\x00"), (1, b"\x35\x00")]
        ident = random.randrange(65536)
        query = dns_query(ident)
        payload = struct.pack("!H", len(query)) + query
        if protocol.startswith("v4.base64"):
            await ws.send_str("0" + base64.b64encode(payload).decode())
        else:
            await ws.send_bytes(b"\x00" + payload)
        reply = b""
        while len(reply) < 2 or len(reply) < 2 + struct.unpack("!H", reply[:2])[0]:
            (channel, data), = await frames(ws, 1)
            assert channel == 0
            reply += data
        wire = reply[2:]
        assert struct.unpack("!H", wire[:2])[0] == ident
        truth = sandbox.service("default", "kubernetes")["spec"]["clusterIP"]
        assert wire.endswith(bytes(int(o) for o in truth.split(".")))
    finally:
        await ws.close()
        await session.close()


async def test_a_port_nobody_listens_on_is_reported_on_the_error_channel(
        sandbox: Sandbox) -> None:
    pod = sandbox.dns_pods()[0]
    session, ws = await forward(sandbox, pod["metadata"]["name"], 9)
    try:
        got = await frames(ws, 3)
        assert got[:2] == [(0, b"\x09\x00"), (1, b"\x09\x00")]
        channel, text = got[2]
        sandbox_id = pod["metadata"]["uid"].replace("-", "")
        assert channel == 1
        assert text.decode().startswith(
            f"error forwarding port 9 to pod {sandbox_id}, uid : failed to connect to "
            "localhost:9 inside namespace")
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
        await session.close()


async def test_an_unsupported_subprotocol_is_400(sandbox: Sandbox) -> None:
    context = ssl.create_default_context(cadata=sandbox.ca_pem.decode())
    pod = sandbox.dns_pods()[0]["metadata"]["name"]
    headers = {"Authorization": f"Bearer {sandbox.admin_token}", "Connection": "Upgrade",
               "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
               "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}
    async with aiohttp.ClientSession() as session:
        url = f"{sandbox.url}/api/v1/namespaces/kube-system/pods/{pod}/portforward?ports=53"
        async with session.get(url, headers=headers, ssl=context) as resp:
            body = await resp.json()
            assert resp.status == 400
            assert body["message"].startswith("requested protocol(s) are not supported")
