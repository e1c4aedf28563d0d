"""The wire format: queries from templates, and a reply parser that never raises."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from corednsprobe.model import Check, Outcome
from corednsprobe.probe import wire
from corednsprobe.probe.classify import classify

NAME = "kubernetes.default.svc.cluster.local"


def reply(query: bytes, answers: list[bytes], rcode: int = 0, flags: int = 0x8180) -> bytes:
    """A reply to ``query`` (which must have no additional records) with raw answer RRs."""
    header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), flags | rcode, 1,
                         len(answers), 0, 0)
    return header + query[12:] + b"".join(answers)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 30) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


QNAME_POINTER = b"\xc0\x0c"  # the question's name, at offset 12


def test_query_template_gets_the_id_and_asks_the_question() -> None:
    template = wire.question_bytes(NAME, "AAAA")
    query = wire.with_id(template, 0xBEEF)
    parsed = wire.parse(query)
    assert isinstance(parsed, wire.Reply)
    assert parsed.id == 0xBEEF and parsed.rd and not parsed.qr
    assert parsed.question == wire.Question(wire.encode_name(NAME), 28, 1)
    assert query[2:] == template[2:]


def test_edns_query_carries_one_opt_record() -> None:
    query = wire.question_bytes(NAME, "A", edns=True)
    assert struct.unpack("!H", query[10:12]) == (1,)
    assert query.endswith(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")


def test_question_match_ignores_ascii_case_only() -> None:
    asked = wire.question_of(wire.question_bytes(NAME, "A"))
    upper = wire.question_of(wire.question_bytes(NAME.upper(), "A"))
    other_type = wire.question_of(wire.question_bytes(NAME, "AAAA"))
    assert asked.matches(upper)
    assert not asked.matches(other_type)
    assert not asked.matches(wire.question_of(wire.question_bytes("kubernetez.default", "A")))


def test_cname_chain_with_compression_is_followed_to_the_address() -> None:
    query = wire.with_id(wire.question_bytes("alias.default.svc.cluster.local", "A"), 1)
    # alias -> web.default... (target compressed against the question's suffix) -> A
    target_offset = len(query) + 12  # first answer's rdata starts after owner(2)+10
    answers = [
        rr(QNAME_POINTER, 5, b"\x03web" + b"\xc0\x12"),  # web + pointer to "default..."
        rr(struct.pack("!H", 0xC000 | target_offset), 1, bytes([10, 0, 0, 7])),
        rr(b"\x05other\x00", 1, bytes([9, 9, 9, 9])),  # not on the chain: ignored
    ]
    parsed = wire.parse(reply(query, answers))
    assert isinstance(parsed, wire.Reply)
    assert parsed.answers[0].data == "web.default.svc.cluster.local."
    assert parsed.addresses(wire.question_of(query)) == ("10.0.0.7",)


def test_pointer_loop_is_malformed_not_a_hang() -> None:
    query = wire.with_id(wire.question_bytes(NAME, "A"), 2)
    loop_at = len(query)
    looping = struct.pack("!H", 0xC000 | loop_at)  # points at itself
    parsed = wire.parse(reply(query, [rr(looping, 1, b"\x01\x02\x03\x04")]))
    assert isinstance(parsed, wire.Malformed) and "pointer" in parsed.reason
    assert parsed.id == 2


def test_cut_short_messages_are_malformed() -> None:
    query = wire.with_id(wire.question_bytes(NAME, "A"), 3)
    whole = reply(query, [rr(QNAME_POINTER, 1, bytes([10, 96, 0, 1]))])
    for end in range(len(whole)):
        assert isinstance(wire.parse(whole[:end]), wire.Malformed), end
    assert isinstance(wire.parse(whole), wire.Reply)


def test_a_record_of_wrong_length_is_malformed() -> None:
    query = wire.with_id(wire.question_bytes(NAME, "A"), 4)
    assert isinstance(wire.parse(reply(query, [rr(QNAME_POINTER, 1, b"\x01\x02\x03")])),
                      wire.Malformed)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_parser_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    assert isinstance(wire.parse(data), wire.Reply | wire.Malformed)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
       st.integers(0, 0xFFFF))
def test_parser_never_raises_on_damaged_real_replies(edits: list[tuple[int, int]],
                                                       counts: int) -> None:
    query = wire.with_id(wire.question_bytes(NAME, "A"), 5)
    data = bytearray(reply(query, [rr(QNAME_POINTER, 5, b"\x03web\xc0\x12"),
                                   rr(b"\x03web\xc0\x12", 1, bytes([10, 96, 0, 1]))]))
    data[6:8] = counts.to_bytes(2, "big")
    for position, value in edits:
        if position < len(data):
            data[position] = value
    parsed = wire.parse(bytes(data))
    assert isinstance(parsed, wire.Reply | wire.Malformed)
    if isinstance(parsed, wire.Reply) and parsed.question is not None:
        parsed.addresses(parsed.question)  # never raises either


def _classify(check: Check, rcode: int = 0, answers: list[bytes] | None = None,
              flags: int = 0x8180) -> Outcome:
    query = wire.with_id(wire.question_bytes(check.qname, check.qtype), 6)
    parsed = wire.parse(reply(query, answers or [], rcode, flags))
    assert isinstance(parsed, wire.Reply)
    return classify(check, parsed, wire.question_of(query)).outcome


def test_classification_table() -> None:
    a_record = [rr(QNAME_POINTER, 1, bytes([10, 96, 0, 1]))]
    anything = Check("c", NAME)
    expect = Check("c", NAME, expect_addresses=frozenset({"10.96.0.1"}))
    other = Check("c", NAME, expect_addresses=frozenset({"10.96.0.2"}))
    negative = Check("c", NAME, expect_rcode="NXDOMAIN")
    assert _classify(anything, answers=a_record) is Outcome.OK
    assert _classify(expect, answers=a_record) is Outcome.OK
    assert _classify(other, answers=a_record) is Outcome.WRONG_ANSWER
    assert _classify(anything) is Outcome.NODATA
    assert _classify(anything, rcode=3) is Outcome.NXDOMAIN
    assert _classify(negative, rcode=3) is Outcome.OK
    assert _classify(negative, answers=a_record) is Outcome.WRONG_ANSWER
    assert _classify(anything, rcode=2) is Outcome.SERVFAIL
    assert _classify(anything, rcode=5) is Outcome.REFUSED
    assert _classify(anything, rcode=4) is Outcome.MALFORMED
    assert _classify(anything, answers=a_record, flags=0x8380) is Outcome.TRUNCATED
