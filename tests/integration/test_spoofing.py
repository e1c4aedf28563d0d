"""Replies that are not ours are ignored: wrong ID, question, source port or address.

A responder written here asks the real unbound, then sends forged copies of its
reply carrying another address (6.6.6.6) before (or instead of) the true one.
If the Prober accepted any forgery, the result would be wrong_answer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from corednsprobe.metrics import Metrics
from corednsprobe.model import Check, IgnoredReply, Outcome, Target, TargetKind
from corednsprobe.probe import wire
from corednsprobe.probe.engine import Prober
from tests.helpers.dnsservers import SERVICE_IP, RunningServer

NAME = "kubernetes.default.svc.cluster.local"
TRUE_ADDRESS = socket.inet_aton(SERVICE_IP)
FORGED_ADDRESS = socket.inet_aton("6.6.6.6")
CHECK = Check("svc", NAME, expect_addresses=frozenset({SERVICE_IP}))

Forger = Callable[[bytes], list[tuple[str, bytes]]]  # true reply → [(sender, bytes)]


def forgeries(reply: bytes) -> list[tuple[str, bytes]]:
    forged = reply.replace(TRUE_ADDRESS, FORGED_ADDRESS)
    wrong_id = ((int.from_bytes(forged[:2], "big") + 1) % 65536).to_bytes(2, "big")
    wrong_question = forged.replace(b"\x0akubernetes", b"\x0akubernetez", 1)
    return [("server", wrong_id + forged[2:]), ("server", wrong_question),
            ("other-port", forged), ("other-address", forged)]


class Responder:
    """Listens on 127.0.0.1; per query sends ``forger``'s datagrams, 20 ms apart."""

    def __init__(self, upstream: RunningServer, forger: Forger) -> None:
        self.upstream = (upstream.address, upstream.port)
        self.forger = forger
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other_port.bind(("127.0.0.1", 0))
        self.other_address = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other_address.bind(("127.0.0.2", self.port))
        self.stopped = threading.Event()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                query, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            for sender, data in self.forger(self._ask_upstream(query)):
                sock = {"server": self.sock, "other-port": self.other_port,
                        "other-address": self.other_address}[sender]
                sock.sendto(data, client)
                time.sleep(0.02)

    def _ask_upstream(self, query: bytes) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(query, self.upstream)
            return sock.recv(4096)

    def close(self) -> None:
        for sock in (self.sock, self.other_port, self.other_address):
            sock.close()


@pytest.fixture
def responder(unbound: RunningServer, request: pytest.FixtureRequest) -> Iterator[Responder]:
    responder = Responder(unbound, request.param)
    thread = threading.Thread(target=responder.serve, daemon=True)
    thread.start()
    try:
        yield responder
    finally:
        responder.stopped.set()
        thread.join(5)
        responder.close()


def _target(responder: Responder) -> Target:
    return Target(TargetKind.POD, "127.0.0.1", responder.port)


@pytest.mark.parametrize("responder", [lambda r: [*forgeries(r), ("server", r)]],
                         indirect=True)
async def test_true_reply_after_forgeries_is_accepted(responder: Responder) -> None:
    result = await Prober(1.0).probe(_target(responder), CHECK)
    assert (result.outcome, result.answers) == (Outcome.OK, (SERVICE_IP,))
    assert result.rtt_seconds is not None and result.rtt_seconds >= 0.07  # waited past them


@pytest.mark.parametrize("responder", [forgeries], indirect=True)
async def test_only_forgeries_is_a_timeout(responder: Responder) -> None:
    result = await Prober(0.5, tcp_reask=False).probe(_target(responder), CHECK)
    assert result.outcome is Outcome.TIMEOUT


def _answer_cut_short(reply: bytes) -> bytes:
    """The reply's header and question intact, its first answer record cut off."""
    question_end = 12 + len(wire.encode_name(NAME)) + 4
    assert int.from_bytes(reply[6:8], "big") >= 1  # it has an answer to cut
    return reply[:question_end + 3]


@pytest.mark.parametrize("responder", [lambda r: [("server", _answer_cut_short(r))]],
                         indirect=True)
async def test_unparsable_reply_from_the_server_is_malformed(responder: Responder) -> None:
    """With the probe's ID and question readable, a reply that breaks later is the
    probe's outcome: the target did answer, and wrongly."""
    result = await Prober(1.0).probe(_target(responder), CHECK)
    assert result.outcome is Outcome.MALFORMED
    assert result.detail


@pytest.mark.parametrize("responder", [lambda r: [("server", r[:2] + b"\x83" + r[3:])]],
                         indirect=True)
async def test_truncated_reply_is_truncated(responder: Responder) -> None:
    result = await Prober(1.0).probe(_target(responder), CHECK)
    assert result.outcome is Outcome.TRUNCATED


def test_each_forgery_would_be_a_wrong_answer_if_accepted(unbound: RunningServer) -> None:
    """The forgeries are otherwise sound replies: accepting one would change the result."""
    from corednsprobe.probe.classify import classify
    from tests.helpers.dnsservers import ask

    true_reply = ask(unbound.address, unbound.port, NAME)
    assert true_reply is not None
    raw = Responder._ask_upstream(Responder(unbound, forgeries), wire.with_id(
        wire.question_bytes(NAME, "A"), true_reply.id))
    for _, data in forgeries(raw):
        parsed = wire.parse(data)
        assert isinstance(parsed, wire.Reply) and parsed.question is not None
        assert classify(CHECK, parsed, parsed.question).outcome is Outcome.WRONG_ANSWER


def _not_a_response(reply: bytes) -> bytes:
    return reply[:2] + bytes([reply[2] & 0x7F]) + reply[3:]


def _ignored_counts(metrics: Metrics) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels["reason"]: s.value
            for f in text_string_to_metric_families(metrics.render().decode())
            if f.name == "corednsprobe_replies_ignored" for s in f.samples}


@pytest.mark.parametrize("responder", [lambda r: [
    *forgeries(r), ("server", _not_a_response(r.replace(TRUE_ADDRESS, FORGED_ADDRESS))),
    ("server", r)]], indirect=True)
async def test_ignored_forgeries_move_the_ignored_counter(responder: Responder) -> None:
    """Each forgery that reaches the socket is counted under its reason; the kernel
    drops those from another address or port on the connected socket."""
    metrics = Metrics(1.0)
    prober = Prober(1.0, on_ignored=metrics.reply_ignored)
    result = await prober.probe(_target(responder), CHECK)
    assert (result.outcome, result.answers) == (Outcome.OK, (SERVICE_IP,))
    assert _ignored_counts(metrics) == {
        IgnoredReply.OTHER_ID.value: 1.0, IgnoredReply.OTHER_QUESTION.value: 1.0,
        IgnoredReply.NOT_A_RESPONSE.value: 1.0, IgnoredReply.OTHER_SOURCE.value: 0.0,
        IgnoredReply.UNREADABLE.value: 0.0}


def unreadable_sprays(reply: bytes) -> list[tuple[str, bytes]]:
    """Datagrams from the target's own address and port that cannot be tied to the
    probe: 1 byte, the ID alone, a header cut short (with the probe's ID, as an
    on-path sender would know it), and a whole header with the question cut short."""
    question_end = 12 + len(wire.encode_name(NAME)) + 4
    return [("server", b"\x00"), ("server", b"\xff"), ("server", reply[:2]),
            ("server", reply[:2] + b"\x81\x80garbage"), ("server", reply[:11]),
            ("server", reply[:question_end - 3])]


@pytest.mark.parametrize("responder", [lambda r: [*unreadable_sprays(r), ("server", r)]],
                         indirect=True)
async def test_unreadable_spoofed_datagrams_are_ignored_not_malformed(
        responder: Responder) -> None:
    metrics = Metrics(1.0)
    prober = Prober(1.0, on_ignored=metrics.reply_ignored)
    result = await prober.probe(_target(responder), CHECK)
    assert (result.outcome, result.answers) == (Outcome.OK, (SERVICE_IP,))
    assert result.rtt_seconds is not None and result.rtt_seconds >= 0.1  # waited past them
    assert _ignored_counts(metrics)[IgnoredReply.UNREADABLE.value] == 6.0


@pytest.mark.parametrize("responder", [unreadable_sprays], indirect=True)
async def test_only_unreadable_datagrams_is_a_timeout(responder: Responder) -> None:
    result = await Prober(0.5, tcp_reask=False).probe(_target(responder), CHECK)
    assert result.outcome is Outcome.TIMEOUT
    assert "6 datagram(s) ignored" in result.detail
