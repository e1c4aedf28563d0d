"""The sandbox responder's wire code: right answers, and no crash on any input."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from corednsprobe.sandbox.backend import ZoneData
from corednsprobe.sandbox.responder import falsified, respond, wrong_address
from tests.integration.sandbox_dns_client import (
    AAAA,
    FLAG_AA,
    NXDOMAIN,
    REFUSED,
    build_query,
    parse_reply,
)

NAME = "kubernetes.default.svc.cluster.local"
ZONE = ZoneData("cluster.local", {NAME: ("10.96.0.1", "fd00::1")})
FORMERR, NOTIMP = 1, 4
FLAG_TC = 0x0200


def ask(query: bytes, zone: ZoneData = ZONE, udp: bool = True) -> bytes:
    reply = respond(query, zone, udp=udp)
    assert reply is not None
    return reply


def test_a_and_aaaa_come_from_the_zone_with_the_question_echoed_verbatim() -> None:
    query = build_query("KuBeRnEtEs.default.svc.cluster.local")
    wire = ask(query)
    reply = parse_reply(query, wire, 0.0)
    assert reply.addresses == ("10.96.0.1",) and reply.flags & FLAG_AA
    assert wire[12 : len(query)] == query[12:]
    aaaa = build_query(NAME, AAAA)
    assert parse_reply(aaaa, ask(aaaa), 0.0).addresses == ("fd00::1",)


def test_other_types_and_empty_non_terminals_are_nodata_with_soa() -> None:
    for query in (build_query(NAME, 16), build_query("svc.cluster.local")):
        reply = parse_reply(query, ask(query), 0.0)
        assert (reply.rcode, reply.addresses, reply.authority_count) == (0, (), 1)


def test_unknown_names_nxdomain_foreign_names_and_classes_refused() -> None:
    unknown = build_query("nope.svc.cluster.local")
    assert parse_reply(unknown, ask(unknown), 0.0).rcode == NXDOMAIN
    foreign = build_query("cluster.local.example.com")
    assert parse_reply(foreign, ask(foreign), 0.0).rcode == REFUSED
    chaos = build_query(NAME)[:-2] + struct.pack("!H", 3)
    assert parse_reply(chaos, ask(chaos), 0.0).rcode == REFUSED


def test_edns_is_echoed_only_when_asked() -> None:
    plain = build_query(NAME)
    assert struct.unpack_from("!H", ask(plain), 10)[0] == 0
    with_opt = bytearray(plain)
    with_opt[11] = 1
    with_opt += b"\x00" + struct.pack("!HHIH", 41, 4096, 0, 0)
    assert struct.unpack_from("!H", ask(bytes(with_opt)), 10)[0] == 1


def test_large_answers_are_truncated_over_udp_and_whole_over_tcp() -> None:
    many = ZoneData("cluster.local", {NAME: tuple(f"10.0.0.{i}" for i in range(100))})
    query = build_query(NAME)
    udp = ask(query, many)
    assert struct.unpack_from("!H", udp, 2)[0] & FLAG_TC and len(udp) <= 512
    assert len(parse_reply(query, ask(query, many, udp=False), 0.0).addresses) == 100


def test_bad_queries_get_formerr_or_notimp_or_nothing() -> None:
    query = build_query(NAME)
    truncated = query[:20]
    assert struct.unpack_from("!HH", ask(truncated)) == (struct.unpack_from("!H", query)[0],
                                                          0x8100 | FORMERR)
    status = bytearray(query)
    status[2] |= 2 << 3  # opcode STATUS
    assert struct.unpack_from("!H", ask(bytes(status)), 2)[0] & 0xF == NOTIMP
    response = bytearray(query)
    response[2] |= 0x80
    assert respond(bytes(response), ZONE) is None
    assert respond(b"\x00\x01", ZONE) is None


def test_wrong_answers_differ_from_the_truth_in_the_same_family() -> None:
    assert wrong_address("10.96.0.1") == "10.96.0.254"
    assert wrong_address("fd00::1") != "fd00::1" and ":" in wrong_address("fd00::1")
    assert falsified(ZONE).records[NAME] != ZONE.records[NAME]


@given(st.binary(max_size=600))
def test_no_input_crashes_the_responder(wire: bytes) -> None:
    reply = respond(wire, ZONE)
    assert reply is None or reply[:2] == wire[:2]


@given(st.binary(min_size=1, max_size=80))
def test_mangled_questions_never_crash(tail: bytes) -> None:
    wire = build_query(NAME)[:12] + tail
    reply = respond(wire, ZONE)
    assert reply is None or len(reply) >= 12
