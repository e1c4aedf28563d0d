"""The deadline is the configured timeout, on the first probe and after hundreds.

A UDP relay written here sits in front of a real unbound and holds each reply
back for a delay the test sets; the relay runs on its own thread and loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from corednsprobe.model import Check, Outcome, Target, TargetKind
from corednsprobe.probe.engine import Prober
from tests.helpers.dnsservers import SERVICE_IP, RunningServer

TIMEOUT = 1.0
SLACK = 0.06
CHECK = Check("svc", "kubernetes.default.svc.cluster.local",
              expect_addresses=frozenset({SERVICE_IP}))


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self.reply = reply

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


class DelayRelay(asyncio.DatagramProtocol):
    """Forwards each query to the server and sends the reply back ``delay`` s after receipt."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.address: tuple[str, int] = ("", 0)
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = self.loop.create_task(self._relay(data, addr, self.loop.time() + self.delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, query: bytes, client: tuple[str, int], send_at: float) -> None:
        reply: asyncio.Future[bytes] = self.loop.create_future()
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _Upstream(reply), remote_addr=self.upstream)
        try:
            transport.sendto(query)
            data = await asyncio.wait_for(reply, 2.0)
        finally:
            transport.close()
        await asyncio.sleep(max(0.0, send_at - self.loop.time()))
        assert self.transport is not None
        self.transport.sendto(data, client)

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        transport, _ = self.loop.run_until_complete(
            self.loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0)))
        self.transport = transport
        self.address = transport.get_extra_info("sockname")[:2]
        self.ready.set()
        self.loop.run_forever()
        transport.close()
        for task in self.tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


@pytest.fixture
def relay(unbound: RunningServer) -> Iterator[DelayRelay]:
    relay = DelayRelay((unbound.address, unbound.port))
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        assert relay.ready.wait(5)
        yield relay
    finally:
        relay.loop.call_soon_threadsafe(relay.loop.stop)
        thread.join(5)


async def _timed(prober: Prober, target: Target) -> tuple[Outcome, float | None, float]:
    started = time.perf_counter()
    result = await prober.probe(target, CHECK)
    return result.outcome, result.rtt_seconds, time.perf_counter() - started


async def test_first_probe_times_out_at_the_deadline(relay: DelayRelay) -> None:
    target = Target(TargetKind.POD, *relay.address)
    relay.delay = 1.3
    outcome, rtt, elapsed = await _timed(Prober(TIMEOUT, tcp_reask=False), target)
    assert outcome is Outcome.TIMEOUT and rtt is None
    assert TIMEOUT - 0.005 <= elapsed <= TIMEOUT + SLACK


async def test_deadline_holds_after_hundreds_of_fast_answers(relay: DelayRelay) -> None:
    target = Target(TargetKind.POD, *relay.address)
    prober = Prober(TIMEOUT, tcp_reask=False)
    fast = [await prober.probe(target, CHECK) for _ in range(200)]
    assert all(r.ok for r in fast)

    relay.delay = 0.4
    outcome, rtt, _ = await _timed(prober, target)
    assert outcome is Outcome.OK  # a learned short timeout would call this a timeout
    assert rtt is not None and 0.4 <= rtt <= 0.4 + SLACK

    relay.delay = 1.3
    outcome, rtt, elapsed = await _timed(prober, target)
    assert outcome is Outcome.TIMEOUT and rtt is None
    assert TIMEOUT - 0.005 <= elapsed <= TIMEOUT + SLACK
