"""DNS wire format: queries from pre-built bytes, and a reply parser that never raises.

Owns: turning (name, type) into question bytes once, stamping a fresh ID into
them per probe, and reading a reply's header, question and answer section.
Never does: I/O, timing, or deciding whether an answer is right (engine.py does).

The parser is hand-written because it sits on the hot path (a few µs per reply)
and must survive arbitrary bytes from the network: every failure is returned as
:class:`Malformed`, never raised.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from functools import lru_cache

TYPES: dict[str, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "OPT": 41, "HTTPS": 65, "ANY": 255, "CAA": 257,
}
TYPE_NAMES: dict[int, str] = {number: name for name, number in TYPES.items()}
RCODES: dict[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS",
}
CLASS_IN = 1
EDNS_PAYLOAD = 1232
OPTION_NSID = 3  # RFC 5001: the server names itself in its OPT record
MAX_POINTER_HOPS = 64
MAX_CNAME_CHAIN = 16

_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_RR = struct.Struct("!HHIH")
_OPTION = struct.Struct("!HH")


def type_number(name: str) -> int:
    """``A`` → 1; ``TYPE99`` → 99. Raises ValueError on an unknown name."""
    upper = name.upper()
    if upper in TYPES:
        return TYPES[upper]
    if upper.startswith("TYPE") and upper[4:].isdigit() and 0 < int(upper[4:]) < 65536:
        return int(upper[4:])
    raise ValueError(f"unknown DNS type {name!r}")


def type_name(number: int) -> str:
    return TYPE_NAMES.get(number, f"TYPE{number}")


def rcode_name(number: int) -> str:
    return RCODES.get(number, f"RCODE{number}")


def encode_name(name: str) -> bytes:
    """``kubernetes.default`` → wire labels. Raises ValueError on a name DNS cannot carry."""
    text = name.rstrip(".")
    if not text:
        return b"\x00"
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Question:
    """The question section: name in wire form (lower-cased), type and class."""

    wire_name: bytes
    qtype: int
    qclass: int = CLASS_IN

    def matches(self, other: Question) -> bool:
        """Same question, with DNS's ASCII case-insensitive name comparison."""
        return (self.wire_name.lower() == other.wire_name.lower()
                and self.qtype == other.qtype and self.qclass == other.qclass)


@lru_cache(maxsize=4096)
def question_bytes(qname: str, qtype: str, edns: bool = False, nsid: bool = False) -> bytes:
    """A whole query with ID 0 and RD set, built once per (name, type, edns, nsid).

    ``nsid`` asks the server to name itself (an empty NSID option, RFC 5001); it
    implies EDNS. Without it the bytes are exactly those of a query that does not ask.
    """
    edns = edns or nsid
    header = _HEADER.pack(0, 0x0100, 1, 0, 0, 1 if edns else 0)
    body = encode_name(qname) + _QTAIL.pack(type_number(qtype), CLASS_IN)
    option = _OPTION.pack(OPTION_NSID, 0) if nsid else b""
    opt = (b"\x00" + _RR.pack(TYPES["OPT"], EDNS_PAYLOAD, 0, len(option)) + option
           if edns else b"")
    return header + body + opt


def with_id(template: bytes, query_id: int) -> bytes:
    """Stamp a 16-bit ID into pre-built query bytes (0.2 µs instead of a rebuild)."""
    return query_id.to_bytes(2, "big") + template[2:]


@lru_cache(maxsize=4096)
def question_of(template: bytes) -> Question:
    """The question a pre-built query asks (for matching replies)."""
    parsed = parse(template)
    assert isinstance(parsed, Reply) and parsed.question is not None
    return parsed.question


@dataclass(frozen=True, slots=True)
class Record:
    """One answer record: owner name (text), type, TTL and data as text."""

    name: str
    rtype: int
    ttl: int
    data: str

    @property
    def text(self) -> str:
        """The record as dig prints it: owner, TTL, class, type and data."""
        return f"{self.name} {self.ttl} IN {type_name(self.rtype)} {self.data}"


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed DNS message (answer section only; authority/additional are skipped)."""

    id: int
    qr: bool
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    rcode: int
    question: Question | None
    answers: tuple[Record, ...]

    @property
    def rcode_text(self) -> str:
        return rcode_name(self.rcode)

    @property
    def flags(self) -> tuple[str, ...]:
        named = (("qr", self.qr), ("aa", self.aa), ("tc", self.tc), ("rd", self.rd),
                 ("ra", self.ra))
        return tuple(name for name, on in named if on)

    def addresses(self, question: Question) -> tuple[str, ...]:
        """Data of the answers of the asked type, following CNAMEs from the asked name."""
        owner = _name_text(question.wire_name)
        wanted = {owner}
        for _ in range(MAX_CNAME_CHAIN):
            more = {r.data.lower() for r in self.answers
                    if r.rtype == TYPES["CNAME"] and r.name.lower() in wanted}
            if more <= wanted:
                break
            wanted |= more
        return tuple(r.data if r.rtype in (1, 28, 5) else type_name(r.rtype)
                     for r in self.answers
                     if r.rtype == question.qtype and r.name.lower() in wanted)


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a DNS reply we can read, why, and what of it could be read.

    ``id`` and ``qr`` are set only when the whole header was there, and
    ``question`` only when the question section was read: a message cut short
    in its header or question cannot be tied to a query.
    """

    reason: str
    id: int | None = None
    qr: bool = False
    question: Question | None = None


class _Seen:
    """What the parser read before it failed."""

    __slots__ = ("id", "qr", "question")

    def __init__(self) -> None:
        self.id: int | None = None
        self.qr = False
        self.question: Question | None = None


def parse(data: bytes) -> Reply | Malformed:
    """Read a DNS message. Never raises: anything unreadable is :class:`Malformed`."""
    seen = _Seen()
    try:
        return _parse(data, seen)
    except _Bad as exc:
        return Malformed(str(exc), seen.id, seen.qr, seen.question)
    except (IndexError, ValueError, struct.error) as exc:  # a backstop; _parse checks bounds
        return Malformed(f"unreadable: {exc}", seen.id, seen.qr, seen.question)


class _Bad(Exception):
    pass


def _parse(data: bytes, seen: _Seen) -> Reply:
    if len(data) < _HEADER.size:
        raise _Bad(f"short message: {len(data)} bytes")
    qid, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data, 0)
    seen.id, seen.qr = qid, bool(flags & 0x8000)
    offset = _HEADER.size
    question: Question | None = None
    if qdcount > 1:
        raise _Bad(f"{qdcount} questions")
    if qdcount == 1:
        question, offset = _read_question(data, offset)
        seen.question = question
    answers = []
    for _ in range(ancount):
        record, offset = _read_record(data, offset)
        answers.append(record)
    return Reply(
        id=qid, qr=bool(flags & 0x8000), opcode=(flags >> 11) & 0xF, aa=bool(flags & 0x0400),
        tc=bool(flags & 0x0200), rd=bool(flags & 0x0100), ra=bool(flags & 0x0080),
        rcode=flags & 0xF, question=question, answers=tuple(answers),
    )


def _read_question(data: bytes, offset: int) -> tuple[Question, int]:
    wire, offset = _read_name(data, offset)
    if offset + _QTAIL.size > len(data):
        raise _Bad("question cut short")
    qtype, qclass = _QTAIL.unpack_from(data, offset)
    return Question(wire, qtype, qclass), offset + _QTAIL.size


def _read_record(data: bytes, offset: int) -> tuple[Record, int]:
    wire, offset = _read_name(data, offset)
    if offset + _RR.size > len(data):
        raise _Bad("record header cut short")
    rtype, _, ttl, rdlength = _RR.unpack_from(data, offset)
    start = offset + _RR.size
    end = start + rdlength
    if end > len(data):
        raise _Bad("record data cut short")
    return Record(_name_text(wire), rtype, ttl, _rdata_text(data, rtype, start, end)), end


def _rdata_text(data: bytes, rtype: int, start: int, end: int) -> str:
    rdata = data[start:end]
    if rtype == TYPES["A"]:
        if len(rdata) != 4:
            raise _Bad(f"A record of {len(rdata)} bytes")
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == TYPES["AAAA"]:
        if len(rdata) != 16:
            raise _Bad(f"AAAA record of {len(rdata)} bytes")
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype == TYPES["CNAME"]:
        wire, after = _read_name(data, start)
        if after != end:
            raise _Bad("CNAME data length mismatch")
        return _name_text(wire)
    try:
        return _other_rdata(data, rtype, start, end)
    except (_Bad, IndexError, struct.error):
        return _generic_rdata(rdata)


_H = struct.Struct("!H")
_SRV = struct.Struct("!HHH")
_SOA_TAIL = struct.Struct("!IIIII")


def _other_rdata(data: bytes, rtype: int, start: int, end: int) -> str:
    """The presentation form (RFC 1035 master file, as dig prints it) of the data of
    NS, PTR, MX, SRV, TXT and SOA; RFC 3597's generic form for any other type."""
    if rtype in (TYPES["NS"], TYPES["PTR"]):
        return _name_until(data, start, end)
    if rtype == TYPES["MX"]:
        (preference,) = _H.unpack_from(data, start)
        return f"{preference} {_name_until(data, start + _H.size, end)}"
    if rtype == TYPES["SRV"]:
        priority, weight, port = _SRV.unpack_from(data, start)
        return f"{priority} {weight} {port} {_name_until(data, start + _SRV.size, end)}"
    if rtype == TYPES["TXT"]:
        strings, position = [], start
        while position < end:
            length = data[position]
            if position + 1 + length > end:
                raise _Bad("TXT string cut short")
            raw = data[position + 1:position + 1 + length]
            strings.append('"' + raw.decode("ascii", "backslashreplace").replace('"', '\\"')
                           + '"')
            position += 1 + length
        return " ".join(strings)
    if rtype == TYPES["SOA"]:
        mname, after = _read_name(data, start)
        rname, after = _read_name(data, after)
        if after + _SOA_TAIL.size != end:
            raise _Bad("SOA data length mismatch")
        numbers = " ".join(str(n) for n in _SOA_TAIL.unpack_from(data, after))
        return f"{_name_text(mname)} {_name_text(rname)} {numbers}"
    return _generic_rdata(data[start:end])


def _name_until(data: bytes, start: int, end: int) -> str:
    wire, after = _read_name(data, start)
    if after != end:
        raise _Bad("name data length mismatch")
    return _name_text(wire)


def _generic_rdata(rdata: bytes) -> str:
    return f"\\# {len(rdata)} {rdata.hex()}" if rdata else "\\# 0"


def _read_name(data: bytes, offset: int) -> tuple[bytes, int]:
    """A possibly compressed name → (uncompressed wire form, offset after it).

    Pointers must point strictly backwards and are followed at most
    MAX_POINTER_HOPS times, so a pointer loop is reported, not followed forever.
    """
    out = bytearray()
    after: int | None = None
    position = offset
    hops = 0
    while True:
        if position >= len(data):
            raise _Bad("name runs past the end")
        length = data[position]
        if length & 0xC0 == 0xC0:
            if position + 1 >= len(data):
                raise _Bad("pointer cut short")
            target = ((length & 0x3F) << 8) | data[position + 1]
            hops += 1
            if target >= position or hops > MAX_POINTER_HOPS:
                raise _Bad("compression pointer loop")
            if after is None:
                after = position + 2
            position = target
            continue
        if length & 0xC0:
            raise _Bad(f"unknown label type {length:#x}")
        end = position + 1 + length
        if end > len(data):
            raise _Bad("label runs past the end")
        out += data[position:end]
        if len(out) > 255:
            raise _Bad("name longer than 255 bytes")
        if length == 0:
            return bytes(out), (after if after is not None else end)
        position = end


def _name_text(wire: bytes) -> str:
    labels = []
    position = 0
    while position < len(wire) and wire[position]:
        length = wire[position]
        labels.append(wire[position + 1:position + 1 + length].decode("ascii", "backslashreplace"))
        position += 1 + length
    return ".".join(labels) + "."


MAX_NSID_SHOWN = 253  # a pod name is at most 253 characters; longer payloads are cut


def nsid_of(data: bytes, answers_at: int = 0) -> tuple[str, str]:
    """(NSID, problem) of a reply: the server's identifier from the NSID option of its
    OPT record (RFC 5001), as text; ("", "") when the reply carries none, and ("",
    why) when its additional section or OPT record cannot be read. Never raises.

    Read apart from :func:`parse` (which stops after the answers) so that only
    probes that asked for NSID pay for walking the authority and additional sections.
    ``answers_at``: where the answer section starts, when the caller knows (a reply
    whose question matched a probe's: 12 + its wire name + 4); 0 reads the question.
    """
    try:
        return _nsid_of(data, answers_at)
    except _Bad as exc:
        return "", str(exc)
    except (IndexError, ValueError, struct.error) as exc:  # a backstop, as in parse()
        return "", f"unreadable: {exc}"


def _nsid_of(data: bytes, answers_at: int) -> tuple[str, str]:
    if len(data) < _HEADER.size:
        raise _Bad(f"short message: {len(data)} bytes")
    _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    if not arcount:
        return "", ""
    offset = answers_at
    if not offset:
        offset = _HEADER.size
        for _ in range(qdcount):
            _, offset = _read_name(data, offset)
            offset += _QTAIL.size
    for _ in range(ancount + nscount):
        offset = _skip_record(data, offset)
    for _ in range(arcount):
        _, after = _read_name(data, offset)
        if after + _RR.size > len(data):
            raise _Bad("additional record cut short")
        rtype, _, _, rdlength = _RR.unpack_from(data, after)
        start = after + _RR.size
        end = start + rdlength
        if end > len(data):
            raise _Bad("additional record data cut short")
        if rtype == TYPES["OPT"]:
            return _nsid_option(data, start, end), ""
        offset = end
    return "", ""


def _skip_record(data: bytes, offset: int) -> int:
    _, offset = _read_name(data, offset)
    if offset + _RR.size > len(data):
        raise _Bad("record header cut short")
    rdlength: int = _RR.unpack_from(data, offset)[3]
    end = offset + _RR.size + rdlength
    if end > len(data):
        raise _Bad("record data cut short")
    return end


def _nsid_option(data: bytes, start: int, end: int) -> str:
    position = start
    while position < end:
        if position + _OPTION.size > end:
            raise _Bad("EDNS option header cut short")
        code, length = _OPTION.unpack_from(data, position)
        position += _OPTION.size
        if position + length > end:
            raise _Bad(f"EDNS option {code} cut short")
        if code == OPTION_NSID:
            raw = data[position:position + min(length, MAX_NSID_SHOWN)]
            return raw.decode("ascii", "backslashreplace")
        position += length
    return ""
