"""A delaying UDP relay: the sandbox's stand-in for ``tc netem delay``.

Run inside a pod's network namespace as
``python -I -S relay.py <listen-ip> <listen-port> <server-ip> <server-port> <ms>``
(standard library only).
Each datagram is held ``<ms>`` milliseconds, then sent to the server from a
socket of its own; the server's reply goes back to the client from the
listening socket. nft in the pod's namespace redirects UDP port 53 here.

Never does: change the payload, or keep state beyond one exchange (bounded by a
timeout).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

UPSTREAM_TIMEOUT_SECONDS = 5.0


class _Exchange(asyncio.DatagramProtocol):
    """One query to the server; its reply goes back through the listener."""

    def __init__(self, listener: asyncio.DatagramTransport, client: tuple[str, int]) -> None:
        self.listener, self.client = listener, client
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.listener.is_closing():
            self.listener.sendto(data, self.client)
        if not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int], delay: float) -> None:
        self.server, self.delay = server, delay
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        assert self.transport is not None
        client = (str(addr[0]), addr[1])
        task = asyncio.get_running_loop().create_task(self._relay(self.transport, client, data))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _relay(self, listener: asyncio.DatagramTransport, client: tuple[str, int],
                     data: bytes) -> None:
        await asyncio.sleep(self.delay)
        loop = asyncio.get_running_loop()
        transport, exchange = await loop.create_datagram_endpoint(
            lambda: _Exchange(listener, client), remote_addr=self.server
        )
        try:
            transport.sendto(data)
            await asyncio.wait_for(exchange.done, UPSTREAM_TIMEOUT_SECONDS)
        except TimeoutError:
            pass
        finally:
            transport.close()


async def serve(listen: tuple[str, int], server: tuple[str, int], delay_ms: float) -> None:
    """Relay until killed."""
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: _Listener(server, delay_ms / 1000), local_addr=listen
    )
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print("usage: relay.py "
              "<listen-ip> <listen-port> <server-ip> <server-port> <ms>", file=sys.stderr)
        return 2
    listen = (argv[0], int(argv[1]))
    server = (argv[2], int(argv[3]))
    asyncio.run(serve(listen, server, float(argv[4])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
