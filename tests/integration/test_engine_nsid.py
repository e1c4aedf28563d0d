"""The engine asks EDNS NSID only when told to: the answer's NSID lands in the
ProbeResult, a malformed OPT is a detail of the outcome, and a Prober that does
not ask sends the same bytes as before."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from corednsprobe.model import Check, Outcome, Target, TargetKind
from corednsprobe.probe import wire
from corednsprobe.probe.engine import Prober
from tests.helpers import dnsservers
from tests.helpers.dnsservers import RunningServer
from tests.integration.conftest import _need

NAME = "kubernetes.default.svc.cluster.local."
CHECK = Check("kubernetes", NAME, "A", frozenset({"10.96.0.1"}))


@pytest.fixture(scope="module")
def named_unbound(workdir: Path) -> Iterator[RunningServer]:
    _need("unbound", "unbound-control")
    with dnsservers.unbound(workdir, nsid="coredns-7db6d8ff4d-x2x9q") as server:
        yield server


def target(address: str, port: int) -> Target:
    return Target(TargetKind.SERVICE, address, port)


async def test_the_server_that_answered_is_named(named_unbound: RunningServer) -> None:
    result = await Prober(1.0, nsid=True).probe(
        target(named_unbound.address, named_unbound.port), CHECK)
    assert result.outcome is Outcome.OK, result
    assert result.nsid == "coredns-7db6d8ff4d-x2x9q"
    assert result.detail == ""


async def test_a_prober_that_does_not_ask_gets_no_name(named_unbound: RunningServer) -> None:
    result = await Prober(1.0).probe(target(named_unbound.address, named_unbound.port), CHECK)
    assert result.outcome is Outcome.OK and result.nsid == ""


async def test_a_server_without_nsid_answers_as_before(unbound: RunningServer) -> None:
    result = await Prober(1.0, nsid=True).probe(target(unbound.address, unbound.port), CHECK)
    assert result.outcome is Outcome.OK and result.nsid == "" and result.detail == ""


class _Scripted(asyncio.DatagramProtocol):
    """Keeps every query; answers each with an A record and ``additional`` raw bytes."""

    def __init__(self, additional: bytes, arcount: int) -> None:
        self.additional, self.arcount = additional, arcount
        self.queries: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries.append(data)
        end = 12 + len(wire.encode_name(NAME)) + 4
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton("10.96.0.1")
        header = struct.pack("!HHHHHH", int.from_bytes(data[:2], "big"), 0x8180, 1, 1, 0,
                             self.arcount)
        assert self.transport is not None
        self.transport.sendto(header + data[12:end] + answer + self.additional, addr)


async def scripted(additional: bytes, arcount: int) -> tuple[_Scripted, int,
                                                            asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Scripted(additional, arcount), local_addr=("127.0.0.1", 0))
    return proto, transport.get_extra_info("sockname")[1], transport


async def test_a_malformed_opt_is_a_detail_of_an_ok_outcome() -> None:
    bad = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 6) + struct.pack("!HH", 3, 40) + b"ab"
    _, port, transport = await scripted(bad, 1)
    try:
        result = await Prober(1.0, nsid=True).probe(target("127.0.0.1", port), CHECK)
    finally:
        transport.close()
    assert result.outcome is Outcome.OK and result.answers == ("10.96.0.1",)
    assert result.nsid == "" and result.detail == "nsid: EDNS option 3 cut short"


async def test_without_nsid_the_query_bytes_are_those_of_before() -> None:
    server, port, transport = await scripted(b"", 0)
    try:
        plain = await Prober(1.0).probe(target("127.0.0.1", port), CHECK)
        asked = await Prober(1.0, nsid=True).probe(target("127.0.0.1", port), CHECK)
    finally:
        transport.close()
    assert plain.ok and asked.ok and asked.nsid == ""
    before = bytes.fromhex("0000010000010000000000000a6b756265726e657465730764656661756c7403"
                           "73766307636c7573746572056c6f63616c0000010001")
    assert server.queries[0][2:] == before[2:]
    assert server.queries[1][2:] == before[2:10] + b"\x00\x01" + before[12:] + (
        b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x04\x00\x03\x00\x00")
