"""A client of the API server's ``pods/{name}/portforward`` over WebSocket.

Owns: opening one tunnel to one port of one pod through the API server with the
API client's own address, TLS and credentials (subprotocol ``v4.channel.k8s.io``,
framed as the kubelet's portforward/websocket.go frames it: per port a data channel
0 and an error channel 1, each opened by the port as two little-endian bytes),
writing to and reading from it, and telling the failures apart: the tunnel could
not be opened (``TunnelError``: the API server refused or failed, the kubelet
reported an error of its own) from the kubelet's dial inside the pod failing
(``PodDialError``: nothing accepted on the pod's port -- the pod's fault).
Never does: SPDY (kubectl's protocol), UDP (the CRI's PortForwardRequest has no
protocol; kubernetes/kubernetes#47862), or interpret what travels through.

One WebSocket carries one TCP connection per port: the kubelet dials the pod when the
WebSocket opens and hangs up when it closes. So a fresh connection to the pod is a
fresh tunnel.
"""

from __future__ import annotations

import contextlib
import struct
import time
from typing import Any
from urllib.parse import quote

import aiohttp

PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1
# The kubelet (CRI, containerd) wording of a dial inside the pod's network namespace:
# the tunnel reached the pod, and the pod did not accept.
POD_DIAL = "failed to connect to localhost:"


class TunnelError(Exception):
    """The tunnel could not be opened: the API server or the kubelet failed, never the
    pod. ``status`` is the HTTP status of a refused upgrade (403, 500, ...), or None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PodDialError(Exception):
    """The kubelet could not connect to the port inside the pod (its words in the
    message): the tunnel worked and the pod's port did not accept."""

    @property
    def refused(self) -> bool:
        return "connection refused" in str(self)


class TunnelClosed(Exception):
    """The tunnel closed before the expected bytes came (the pod hung up)."""


async def _headers(api: Any) -> dict[str, str]:
    cfg = api.configuration
    headers: dict[str, str] = {}
    for setting in (await cfg.auth_settings()).values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[setting["key"]] = setting["value"]
    return headers


def _session(api: Any) -> aiohttp.ClientSession:
    """The API client's own session: its connector carries the CA, client certificate
    and verification settings of the kubeconfig."""
    session: aiohttp.ClientSession = api.rest_client.pool_manager
    return session


class Tunnel:
    """One open port-forward to one pod's port; ``close`` it when done."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, pod: str, port: int,
                 setup_seconds: float) -> None:
        self.ws = ws
        self.pod = pod
        self.port = port
        self.setup_seconds = setup_seconds
        self._buffer = bytearray()

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(bytes([DATA]) + data)

    async def readexactly(self, n: int) -> bytes:
        """``n`` bytes from the pod's port; PodDialError when the kubelet reports that its
        dial failed, TunnelError for any other error of its, TunnelClosed at the end."""
        while len(self._buffer) < n:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                data = bytes(message.data)
                if not data:
                    continue
                if data[0] == DATA:
                    self._buffer += data[1:]
                elif data[0] == ERROR and len(data) > 1:
                    text = data[1:].decode(errors="replace").strip()
                    if POD_DIAL in text:
                        raise PodDialError(text)
                    raise TunnelError(f"the kubelet reported: {text}")
                continue
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.CLOSED):
                raise TunnelClosed(f"the tunnel closed after {len(self._buffer)} of {n} bytes")
            if message.type is aiohttp.WSMsgType.ERROR:
                raise TunnelClosed(f"the tunnel failed: {self.ws.exception()}")
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    async def close(self) -> None:
        await self.ws.close()


async def open_tunnel(api: Any, namespace: str, pod: str, port: int = 53) -> Tunnel:
    """Open ``pods/{pod}/portforward?ports={port}`` and read the kubelet's two port
    prefixes; TunnelError when that cannot be done (the caller bounds the time)."""
    started = time.perf_counter()
    host = str(api.configuration.host).rstrip("/")
    url = (f"{host}/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/portforward"
           f"?ports={port}")
    try:
        ws = await _session(api).ws_connect(url, protocols=(PROTOCOL,),
                                            headers=await _headers(api), autoping=True)
    except aiohttp.WSServerHandshakeError as exc:
        raise TunnelError(f"the API server refused the port-forward to pod {pod}: "
                          f"{exc.status} {exc.message}", exc.status) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise TunnelError(f"could not reach the API server for the port-forward to pod "
                          f"{pod}: {exc or type(exc).__name__}") from None
    tunnel = Tunnel(ws, pod, port, 0.0)
    try:
        if ws.protocol != PROTOCOL:
            raise TunnelError(f"the API server answered the port-forward to pod {pod} with "
                              f"subprotocol {ws.protocol!r}, not {PROTOCOL}")
        seen: set[int] = set()
        while seen != {DATA, ERROR}:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise TunnelError(f"the port-forward to pod {pod} closed before the kubelet "
                                  f"named the port ({message.type.name})")
            data = bytes(message.data)
            if len(data) != 3 or data[0] not in (DATA, ERROR) or data[0] in seen:
                raise TunnelError(f"the kubelet opened the port-forward to pod {pod} with "
                                  f"{data[:16]!r}, not the port on channels 0 and 1")
            (named,) = struct.unpack("<H", data[1:])
            if named != port:
                raise TunnelError(f"the kubelet opened port {named}, not {port}")
            seen.add(data[0])
    except BaseException:
        await ws.close()
        raise
    tunnel.setup_seconds = time.perf_counter() - started
    return tunnel


async def with_tunnel_closed(tunnel: Tunnel | None) -> None:
    """Close ``tunnel`` if there is one, without letting a closing error escape."""
    if tunnel is not None:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
            await tunnel.close()
