"""``pods/{name}/portforward`` over WebSocket, framed as the kubelet frames it.

Owns: the subprotocols ``v4.channel.k8s.io`` (binary) and
``v4.base64.channel.k8s.io`` (text), chosen as the kubelet's handshake does
(the first one the client offers that it knows); per requested port a data
channel 2i and an error channel 2i+1, each opened by the port as two
little-endian bytes; relaying the data channel to a TCP connection to the
pod (its port 53 is the DNS backend's port); a dial failure reported on the
error channel in the kubelet's wording, after which both channels close
(pkg/kubelet/cri/streaming/portforward/websocket.go and httpstream.go).
Never does: SPDY (kubectl port-forward's protocol), UDP, or dial anything but
the pod's own address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from typing import Any

import aiohttp
from aiohttp import web

from corednsprobe.sandbox import status as S

Obj = dict[str, Any]
PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io")


def parse_ports(values: list[str]) -> list[int]:
    """``ports=53&ports=8080`` or ``ports=53,8080`` → [53, 8080]; 400 when invalid."""
    ports = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part.isdigit() or not 0 < int(part) <= 65535:
                raise S.bad_request(f'invalid port "{part}"')
            ports.append(int(part))
    if not ports:
        raise S.bad_request("at least 1 port must be specified")
    return ports


def dial_failure(port: int, sandbox_id: str, reason: str) -> str:
    """The kubelet's (CRI, containerd) text for a port nobody listens on."""
    return (f"error forwarding port {port} to pod {sandbox_id}, uid : failed to connect to "
            f'localhost:{port} inside namespace "{sandbox_id}", IPv4: {reason} IPv6 <nil> ')


class _Channels:
    def __init__(self, ws: web.WebSocketResponse, text: bool) -> None:
        self.ws, self.text = ws, text
        self.lock = asyncio.Lock()

    async def send(self, channel: int, payload: bytes) -> None:
        async with self.lock:
            if self.ws.closed:
                return
            if self.text:
                await self.ws.send_str(chr(ord("0") + channel) + base64.b64encode(payload).decode())
            else:
                await self.ws.send_bytes(bytes([channel]) + payload)

    def decode(self, message: aiohttp.WSMessage) -> tuple[int, bytes] | None:
        if message.type is aiohttp.WSMsgType.BINARY and message.data:
            return message.data[0], bytes(message.data[1:])
        if message.type is aiohttp.WSMsgType.TEXT and message.data:
            return ord(message.data[0]) - ord("0"), base64.b64decode(message.data[1:])
        return None


async def _pump(reader: asyncio.StreamReader, channels: _Channels, channel: int) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            await channels.send(channel, chunk)


KUBELET_FAILURE = ("unable to do port forwarding: error forwarding port {port} to pod {sid}: "
                   "failed to find sandbox {sid} in store: not found")


async def serve(request: web.Request, pod: Obj, dns_port: int,
                refusal: str = "") -> web.StreamResponse:
    """``refusal`` "500" fails the upgrade as an API server that cannot reach the kubelet
    does; "kubelet" opens the stream and fails each port on its error channel."""
    name = pod["metadata"]["name"]
    if refusal == "500":
        raise S.ApiError(S.status_body(
            500, "InternalError", f"error dialing backend: dial tcp: lookup node for pod {name}: "
            "connect: connection refused"))
    if not pod["spec"].get("nodeName"):
        raise S.bad_request(f"pod {name} does not have a host assigned")
    ports = parse_ports(request.query.getall("ports", []) or request.query.getall("port", []))
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
               if p.strip()]
    if not any(p in PROTOCOLS for p in offered):
        raise S.bad_request(f"requested protocol(s) are not supported: {offered}; supports "
                            f"{list(PROTOCOLS)}")
    ws = web.WebSocketResponse(protocols=PROTOCOLS)
    await ws.prepare(request)
    channels = _Channels(ws, ws.ws_protocol == PROTOCOLS[1])
    address = (pod.get("status") or {}).get("podIP") or ""
    sandbox_id = pod["metadata"]["uid"].replace("-", "")
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: list[asyncio.Task[None]] = []
    try:
        for index, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await channels.send(2 * index, prefix)
            await channels.send(2 * index + 1, prefix)
        for index, port in enumerate(ports):
            if refusal == "kubelet":
                await channels.send(2 * index + 1, KUBELET_FAILURE.format(
                    port=port, sid=sandbox_id).encode())
                continue
            target = dns_port if port == 53 else port
            try:
                async with asyncio.timeout(5):
                    reader, writer = await asyncio.open_connection(address, target)
            except (OSError, TimeoutError) as exc:
                reason = (f"dial tcp4 127.0.0.1:{port}: connect: connection refused"
                          if isinstance(exc, ConnectionRefusedError) else str(exc))
                await channels.send(2 * index + 1, dial_failure(port, sandbox_id,
                                                                reason).encode())
                continue
            writers[index] = writer
            pumps.append(asyncio.create_task(_pump(reader, channels, 2 * index)))
        if not writers:
            await ws.close()
            return ws
        async for message in ws:
            decoded = channels.decode(message)
            if decoded is None:
                continue
            channel, payload = decoded
            sink = writers.get(channel // 2) if channel % 2 == 0 else None
            if sink is not None and payload:
                sink.write(payload)
                await sink.drain()
    finally:
        for task in pumps:
            task.cancel()
        for writer in writers.values():
            writer.close()
        await ws.close()
    return ws
