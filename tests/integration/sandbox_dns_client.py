"""A tiny DNS client for the sandbox tests, written apart from the code under test.

One query per fresh socket (UDP, or TCP with 2-byte length framing); the reply
is parsed just enough to check rcode, flags, addresses and the authority count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
import time
from dataclasses import dataclass

A, AAAA = 1, 28
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
FLAG_AA = 0x0400
TIMEOUT, CONNECTION_REFUSED = "timeout", "refused"


@dataclass(frozen=True)
class Reply:
    rcode: int
    flags: int
    addresses: tuple[str, ...]
    authority_count: int
    rtt: float


def build_query(name: str, qtype: int = A) -> bytes:
    ident = random.randrange(65536)
    wire = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    for label in name.strip(".").split("."):
        wire += bytes([len(label)]) + label.encode()
    return wire + b"\x00" + struct.pack("!HH", qtype, 1)


def _skip_name(wire: bytes, offset: int) -> int:
    while True:
        length = wire[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def parse_reply(query: bytes, wire: bytes, rtt: float) -> Reply:
    ident, flags, qdcount, ancount, nscount, _ = struct.unpack_from("!HHHHHH", wire)
    assert ident == struct.unpack_from("!H", query)[0], "reply ID does not match the query"
    assert flags & 0x8000, "not a response"
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(wire, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(wire, offset)
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", wire, offset)
        offset += 10
        if rtype in (A, AAAA):
            addresses.append(str(ipaddress.ip_address(wire[offset : offset + rdlen])))
        offset += rdlen
    return Reply(flags & 0xF, flags, tuple(addresses), nscount, rtt)


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def udp_query(host: str, port: int, name: str, qtype: int = A,
                    wait: float = 1.0) -> Reply | str:
    """One UDP exchange from a fresh socket: a Reply, TIMEOUT or CONNECTION_REFUSED."""
    query = build_query(name, qtype)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_OneShot, remote_addr=(host, port))
    started = time.perf_counter()
    try:
        transport.sendto(query)
        wire = await asyncio.wait_for(protocol.reply, wait)
    except TimeoutError:
        return TIMEOUT
    except ConnectionRefusedError:
        return CONNECTION_REFUSED
    finally:
        transport.close()
    return parse_reply(query, wire, time.perf_counter() - started)


async def tcp_query(host: str, port: int, name: str, qtype: int = A,
                    wait: float = 2.0) -> Reply | str:
    """One TCP exchange on a fresh connection: a Reply, TIMEOUT or CONNECTION_REFUSED."""
    query = build_query(name, qtype)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                wire = await reader.readexactly(length)
            finally:
                writer.close()
    except TimeoutError:
        return TIMEOUT
    except ConnectionRefusedError:
        return CONNECTION_REFUSED
    return parse_reply(query, wire, time.perf_counter() - started)
