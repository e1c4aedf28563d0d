"""A small authoritative DNS responder for the sandbox's in-process pods.

Owns: the DNS wire code the sandbox needs to answer one zone (parse a query,
build a reply with an SOA for negative answers, minimal EDNS with NSID when
asked and enabled), a ``Responder``
serving that zone on UDP and TCP (2-byte length framing) at one address, and
the pod faults that can be done inside a process (drop, loss, delay, servfail,
wrong answers; reject by closing the UDP socket so that the kernel answers
ICMP port unreachable).

Never does: recurse, forward or answer for names outside its zone (REFUSED);
crash on malformed input (it drops it or answers FORMERR).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from corednsprobe import logs
from corednsprobe.sandbox.backend import Fault, FaultKind, ZoneData

log = logs.get(__name__)

TTL = 30
TYPE_A, TYPE_SOA, TYPE_AAAA, TYPE_OPT = 1, 6, 28, 41
OPTION_NSID = 3  # RFC 5001
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD = 0x8000, 0x0400, 0x0200, 0x0100
UDP_PLAIN_LIMIT = 512
UDP_EDNS_LIMIT = 1232
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed question, with the bytes needed to echo it."""

    ident: int
    flags: int
    name: str  # lower-case, no trailing dot, "" for the root
    qtype: int
    qclass: int
    question_wire: bytes  # QNAME QTYPE QCLASS exactly as received
    edns_size: int | None  # the client's UDP payload size when it sent OPT
    nsid: bool = False  # the client's OPT carried an NSID option (RFC 5001)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A query that deserves an error reply carrying only its header."""

    ident: int
    flags: int
    rcode: int


def _read_name(wire: bytes, offset: int) -> tuple[str, int] | None:
    """Decode an uncompressed name; None when it is malformed."""
    labels: list[str] = []
    total = 0
    while True:
        if offset >= len(wire):
            return None
        length = wire[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        if length > 63 or offset + length > len(wire):
            return None  # compression pointers never belong in a question
        total += length + 1
        if total > 255:
            return None
        label = wire[offset : offset + length].decode("latin-1").lower()
        labels.append(label.replace(".", "\\."))
        offset += length


def _read_edns(wire: bytes, offset: int) -> tuple[int | None, bool]:
    """(UDP size, NSID asked) of an OPT record starting at ``offset``, if one is there."""
    if offset + 1 + _RR_FIXED.size > len(wire) or wire[offset] != 0:
        return None, False
    rtype, rclass, _ttl, rdlen = _RR_FIXED.unpack_from(wire, offset + 1)
    if rtype != TYPE_OPT:
        return None, False
    start = offset + 1 + _RR_FIXED.size
    rdata = wire[start : start + rdlen]
    nsid, index = False, 0
    while index + 4 <= len(rdata):
        code, length = struct.unpack_from("!HH", rdata, index)
        nsid = nsid or code == OPTION_NSID
        index += 4 + length
    return max(rclass, UDP_PLAIN_LIMIT), nsid


def parse_query(wire: bytes) -> Query | Rejected | None:
    """Parse a query; None means drop it (too short, or a response)."""
    if len(wire) < _HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, arcount = _HEADER.unpack_from(wire)
    if flags & FLAG_QR:
        return None
    if (flags >> 11) & 0xF != 0:
        return Rejected(ident, flags, NOTIMP)
    if qdcount != 1:
        return Rejected(ident, flags, FORMERR)
    decoded = _read_name(wire, _HEADER.size)
    if decoded is None or decoded[1] + 4 > len(wire):
        return Rejected(ident, flags, FORMERR)
    name, end = decoded
    qtype, qclass = struct.unpack_from("!HH", wire, end)
    edns, nsid = _read_edns(wire, end + 4) if arcount else (None, False)
    return Query(ident, flags, name, qtype, qclass, wire[_HEADER.size : end + 4], edns, nsid)


def encode_name(name: str) -> bytes:
    """Wire form of a dotted name (no escapes; sandbox names are plain)."""
    out = bytearray()
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def _soa_record(domain: str) -> bytes:
    rdata = (
        encode_name(f"ns.dns.{domain}")
        + encode_name(f"hostmaster.{domain}")
        + struct.pack("!IIIII", 1, 7200, 1800, 86400, TTL)
    )
    return encode_name(domain) + _RR_FIXED.pack(TYPE_SOA, CLASS_IN, TTL, len(rdata)) + rdata


def _address_record(address: str) -> tuple[int, bytes]:
    """(type, wire) of an A/AAAA answer at the question's name; type 0 if unparsable."""
    try:
        packed = ipaddress.ip_address(address).packed
    except ValueError:
        return 0, b""
    rtype = TYPE_A if len(packed) == 4 else TYPE_AAAA
    return rtype, b"\xc0\x0c" + _RR_FIXED.pack(rtype, CLASS_IN, TTL, len(packed)) + packed


@dataclass(frozen=True, slots=True)
class _Answer:
    rcode: int
    authoritative: bool
    answers: tuple[bytes, ...] = ()
    authority: tuple[bytes, ...] = ()


def _in_zone(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _name_exists(name: str, domain: str, records: Mapping[str, tuple[str, ...]]) -> bool:
    """True for names with data, the apex, and empty non-terminals."""
    if name == domain or name in records:
        return True
    return any(owner.endswith("." + name) for owner in records)


def _lookup(query: Query, zone: ZoneData) -> _Answer:
    domain = zone.domain.lower().strip(".")
    if query.qclass != CLASS_IN or not _in_zone(query.name, domain):
        return _Answer(REFUSED, authoritative=False)
    soa = _soa_record(domain)
    if not _name_exists(query.name, domain, zone.records):
        return _Answer(NXDOMAIN, True, authority=(soa,))
    if query.qtype == TYPE_SOA and query.name == domain:
        soa_at_question = b"\xc0\x0c" + soa[len(encode_name(domain)) :]
        return _Answer(NOERROR, True, answers=(soa_at_question,))
    wanted = [
        wire
        for rtype, wire in map(_address_record, zone.records.get(query.name, ()))
        if rtype == query.qtype and rtype
    ]
    if not wanted:
        return _Answer(NOERROR, True, authority=(soa,))
    return _Answer(NOERROR, True, answers=tuple(wanted))


def _header(ident: int, query_flags: int, rcode: int, aa: bool, counts: tuple[int, ...],
            truncated: bool = False) -> bytes:
    flags = (FLAG_QR | (query_flags & (FLAG_RD | 0x7800)) | (FLAG_AA if aa else 0)
             | (FLAG_TC if truncated else 0) | rcode)
    return _HEADER.pack(ident, flags, *counts)


def _opt_record(nsid: bytes | None = None) -> bytes:
    options = b"" if nsid is None else struct.pack("!HH", OPTION_NSID, len(nsid)) + nsid
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, UDP_EDNS_LIMIT, 0, len(options)) + options


def build_reply(query: Query, answer: _Answer, limit: int, nsid: bytes | None = None) -> bytes:
    """Serialise ``answer``; set TC and drop the records when over ``limit``. ``nsid``
    (the server's identifier) is echoed only to a query that asked for it."""
    shown = nsid if query.nsid else None
    opt = (_opt_record(shown),) if query.edns_size is not None else ()
    body = b"".join((*answer.answers, *answer.authority, *opt))
    counts = (1, len(answer.answers), len(answer.authority), len(opt))
    reply = _header(query.ident, query.flags, answer.rcode, answer.authoritative, counts)
    reply += query.question_wire + body
    if len(reply) <= limit:
        return reply
    truncated = _header(query.ident, query.flags, answer.rcode, answer.authoritative,
                        (1, 0, 0, len(opt)), truncated=True)
    return truncated + query.question_wire + b"".join(opt)


def wrong_address(address: str) -> str:
    """A plausible address that is not ``address`` (its last byte inverted)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_address(int(ip) ^ 0xFF))


def falsified(zone: ZoneData) -> ZoneData:
    """``zone`` with every address replaced by a wrong one."""
    records = {name: tuple(map(wrong_address, addrs)) for name, addrs in zone.records.items()}
    return ZoneData(zone.domain, records)


def respond(
    wire: bytes, zone: ZoneData, *, servfail: bool = False, udp: bool = True,
    nsid: bytes | None = None,
) -> bytes | None:
    """The reply to ``wire`` from ``zone``; None when the query is to be dropped."""
    parsed = parse_query(wire)
    if parsed is None:
        return None
    if isinstance(parsed, Rejected):
        return _header(parsed.ident, parsed.flags, parsed.rcode, False, (0, 0, 0, 0))
    answer = _Answer(SERVFAIL, False) if servfail else _lookup(parsed, zone)
    if not udp:
        limit = 0xFFFF
    elif parsed.edns_size is None:
        limit = UDP_PLAIN_LIMIT
    else:
        limit = min(parsed.edns_size, UDP_EDNS_LIMIT)
    return build_reply(parsed, answer, limit, nsid)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Responder) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.owner.handle_udp(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP about an earlier reply; nothing to do


class Responder:
    """Serves one zone at ``host``:``port`` over UDP and TCP, with pod faults;
    ``nsid`` (e.g. the pod name) answers EDNS NSID queries, None answers none."""

    def __init__(self, host: str, port: int, zone: ZoneData, nsid: bytes | None = None) -> None:
        self.host, self.port, self.zone = host, port, zone
        self.nsid = nsid
        self.fault = Fault()
        self.udp_queries = 0
        self.tcp_queries = 0
        self._udp: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        """Bind UDP and TCP; raises OSError when the address is taken."""
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port,
                                               reuse_address=True)
        try:
            await self._open_udp()
        except OSError:
            self._tcp.close()
            raise

    async def _open_udp(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
        )
        self._udp = protocol

    def _close_udp(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = None

    async def set_fault(self, fault: Fault) -> None:
        """Apply ``fault``; reject closes the UDP socket, anything else reopens it."""
        self.fault = fault
        if fault.kind is FaultKind.REJECT:
            self._close_udp()
        elif self._udp is None and self._tcp is not None:
            await self._open_udp()

    async def close(self) -> None:
        self._close_udp()
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        await close_connections(self._connections)

    def _reply(self, data: bytes, udp: bool) -> bytes | None:
        kind = self.fault.kind
        zone = falsified(self.zone) if kind is FaultKind.WRONG_ANSWER else self.zone
        return respond(data, zone, servfail=kind is FaultKind.SERVFAIL, udp=udp, nsid=self.nsid)

    def handle_udp(
        self, protocol: _UdpProtocol, data: bytes, addr: tuple[str | object, int]
    ) -> None:
        self.udp_queries += 1
        fault = self.fault
        if fault.kind is FaultKind.DROP:
            return
        if fault.kind is FaultKind.LOSS and random.uniform(0, 100) < fault.value:
            return
        reply = self._reply(data, udp=True)
        transport = protocol.transport
        if reply is None or transport is None:
            return
        if fault.kind is FaultKind.DELAY:
            asyncio.get_running_loop().call_later(fault.value / 1000, _send_if_open,
                                                  transport, reply, addr)
        else:
            transport.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await self._answer_stream(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _answer_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            async with asyncio.timeout(10):
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(length)
            self.tcp_queries += 1
            reply = self._reply(data, udp=False)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()


def _send_if_open(transport: asyncio.DatagramTransport, reply: bytes,
                  addr: tuple[str | object, int]) -> None:
    if not transport.is_closing():
        transport.sendto(reply, addr)


async def close_connections(connections: dict[asyncio.Task[None], asyncio.StreamWriter]) -> None:
    """End stream handlers by closing their sockets (cancelling them upsets asyncio's
    stream machinery on Python 3.11) and wait for them, bounded."""
    tasks = list(connections)
    for writer in list(connections.values()):
        writer.close()
    if tasks:
        await asyncio.wait(tasks, timeout=2.0)
