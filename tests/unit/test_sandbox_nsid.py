"""The in-process responder's EDNS NSID: echoed only to a query that carries
the option, only when the pod has an identifier, and never without EDNS."""

from __future__ import annotations

import struct

from corednsprobe.sandbox.backend import ZoneData
from corednsprobe.sandbox.responder import respond

ZONE = ZoneData("cluster.local", {"a.cluster.local": ("10.0.0.1",)})


def query(options: bytes | None) -> bytes:
    header = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0 if options is None else 1)
    wire = header + b"\x01a\x07cluster\x05local\x00" + struct.pack("!HH", 1, 1)
    if options is not None:
        wire += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options
    return wire


def opt_rdata(reply: bytes) -> bytes | None:
    """The OPT record's RDATA: it is the last record of these replies."""
    marker = reply.rfind(b"\x00\x00\x29")
    if marker < 0:
        return None
    rdlen = struct.unpack_from("!H", reply, marker + 9)[0]
    return reply[marker + 11: marker + 11 + rdlen]


def test_nsid_answered_when_asked_and_enabled() -> None:
    asked = query(struct.pack("!HH", 3, 0))
    reply = respond(asked, ZONE, nsid=b"coredns-abc")
    assert reply is not None
    assert opt_rdata(reply) == struct.pack("!HH", 3, 11) + b"coredns-abc"


def test_no_nsid_unless_asked_or_enabled() -> None:
    plain_edns = respond(query(b""), ZONE, nsid=b"coredns-abc")
    assert plain_edns is not None and opt_rdata(plain_edns) == b""
    disabled = respond(query(struct.pack("!HH", 3, 0)), ZONE, nsid=None)
    assert disabled is not None and opt_rdata(disabled) == b""
    no_edns = respond(query(None), ZONE, nsid=b"coredns-abc")
    assert no_edns is not None and opt_rdata(no_edns) is None
