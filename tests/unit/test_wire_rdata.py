"""Answer data of the types that are not addresses, as dig prints it; data that does
not parse is shown in RFC 3597's generic form, never a malformed reply."""

from __future__ import annotations

from corednsprobe.probe import wire
from tests.unit.test_wire import QNAME_POINTER, reply, rr

NAME = "_dns._udp.kube-dns.kube-system.svc.cluster.local"


def parsed(qtype: str, rdata: bytes) -> wire.Reply:
    query = wire.question_bytes(NAME, qtype)
    out = wire.parse(reply(query, [rr(QNAME_POINTER, wire.TYPES[qtype], rdata)]))
    assert isinstance(out, wire.Reply), out
    return out


def test_srv_with_a_compressed_target_reads_as_dig_shows_it() -> None:
    answer = parsed("SRV", b"\x00\x00\x00\x64\x00\x35" + QNAME_POINTER).answers[0]
    assert answer.text == f"{NAME}. 30 IN SRV 0 100 53 {NAME}."


def test_txt_mx_and_soa() -> None:
    assert parsed("TXT", b"\x02hi\x03a\"b").answers[0].data == '"hi" "a\\"b"'
    assert parsed("MX", b"\x00\x0a" + QNAME_POINTER).answers[0].data == f"10 {NAME}."
    soa = b"\x01a\x00\x01b\x00" + bytes.fromhex("00000001" "00000002" "00000003"
                                                 "00000004" "00000005")
    assert parsed("SOA", soa).answers[0].data == "a. b. 1 2 3 4 5"


def test_unreadable_data_of_another_type_is_generic_not_malformed() -> None:
    assert parsed("SRV", b"\x00\x01").answers[0].data == "\\# 2 0001"
    assert parsed("CAA", b"").answers[0].data == "\\# 0"
