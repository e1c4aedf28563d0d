"""EDNS NSID (RFC 5001) on the wire: the query asks with an empty option, the reply's
option is read from its OPT record, and no bytes make the reader raise."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from corednsprobe.probe import wire

NAME = "kubernetes.default.svc.cluster.local"
# The bytes of a query for NAME/A as every release before NSID built them (ID 0).
PLAIN = bytes.fromhex("0000010000010000000000000a6b756265726e657465730764656661756c7403"
                      "73766307636c7573746572056c6f63616c0000010001")


def opt(*options: tuple[int, bytes]) -> bytes:
    rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)
    return b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata


def reply(additional: list[bytes], answers: list[bytes] = (), authority: list[bytes] = ()
          ) -> bytes:
    query = wire.question_bytes(NAME, "A")
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, len(answers), len(authority),
                         len(additional))
    return header + query[12:] + b"".join([*answers, *authority, *additional])


A_RR = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes([10, 96, 0, 1])
SOA_RR = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, 30, 3) + b"\x00\x00\x00"  # odd data: skipped


def test_a_query_that_does_not_ask_is_unchanged_byte_for_byte() -> None:
    assert wire.question_bytes(NAME, "A") == PLAIN
    assert wire.question_bytes(NAME, "A", False, False) == PLAIN


def test_a_query_that_asks_carries_one_opt_with_an_empty_nsid_option() -> None:
    query = wire.question_bytes(NAME, "A", nsid=True)
    assert query[:10] == PLAIN[:10] and query[10:12] == b"\x00\x01"  # ARCOUNT 1
    assert query[12:len(PLAIN)] == PLAIN[12:]
    assert query[len(PLAIN):] == opt((3, b""))
    assert wire.question_bytes(NAME, "A", edns=True, nsid=True) == query


def test_the_nsid_is_read_after_answers_and_authority() -> None:
    data = reply([opt((10, b"cookie12"), (3, b"coredns-5d78c9869d-abcde"))],
                 answers=[A_RR], authority=[SOA_RR])
    assert wire.nsid_of(data) == ("coredns-5d78c9869d-abcde", "")
    assert isinstance(wire.parse(data), wire.Reply)


def test_no_opt_or_no_nsid_option_is_no_nsid_and_no_problem() -> None:
    assert wire.nsid_of(reply([], answers=[A_RR])) == ("", "")
    assert wire.nsid_of(reply([opt()])) == ("", "")
    assert wire.nsid_of(reply([opt((10, b"12345678"))])) == ("", "")


def test_a_malformed_opt_is_a_problem_not_an_nsid() -> None:
    cut = reply([opt((3, b"coredns-a"))])[:-3]
    assert wire.nsid_of(cut) == ("", "additional record data cut short")
    bad_option = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 6) + struct.pack("!HH", 3, 9) + b"ab"
    assert wire.nsid_of(reply([bad_option])) == ("", "EDNS option 3 cut short")
    assert wire.nsid_of(b"\x00\x01") == ("", "short message: 2 bytes")


def test_non_ascii_bytes_are_shown_escaped() -> None:
    assert wire.nsid_of(reply([opt((3, b"pod\xff"))])) == ("pod\\xff", "")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_no_bytes_make_the_nsid_reader_raise(data: bytes) -> None:
    nsid, problem = wire.nsid_of(data)
    assert isinstance(nsid, str) and isinstance(problem, str)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=60))
def test_any_cut_of_a_good_reply_is_read_or_reported(payload: bytes, cut: int) -> None:
    data = reply([opt((3, payload))], answers=[A_RR])
    nsid, problem = wire.nsid_of(data[:len(data) - cut])
    assert (nsid and not problem) or not nsid
    if cut == 0:
        assert nsid == payload.decode("ascii", "backslashreplace")
