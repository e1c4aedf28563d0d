"""Reply classification: what came back from a target, as an :class:`Outcome` (pure).

Owns: the table from a matched reply (rcode, TC bit, answers against what the
check expects) or a receive error to an Outcome, and building the ProbeResult
of one exchange from it.
Never does: I/O, timing, or deciding which datagram is the reply (engine.py
matches source, ID and question first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
from dataclasses import dataclass
from typing import Any

from corednsprobe.model import Check, Outcome, ProbeResult
from corednsprobe.probe import wire


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a reply means for a check: the outcome and what to show of it."""

    outcome: Outcome
    answers: tuple[str, ...] = ()
    detail: str = ""


def classify(check: Check, reply: wire.Reply, question: wire.Question) -> Verdict:
    """Map a matched reply onto an Outcome (pure; the table is in the module docs)."""
    rcode = reply.rcode_text
    if reply.tc:
        return Verdict(Outcome.TRUNCATED, detail="TC bit set")
    if rcode == "NXDOMAIN":
        return Verdict(Outcome.OK if check.expect_rcode == "NXDOMAIN" else Outcome.NXDOMAIN)
    if rcode == "SERVFAIL":
        return Verdict(Outcome.SERVFAIL)
    if rcode == "REFUSED":
        return Verdict(Outcome.REFUSED)
    if rcode != "NOERROR":
        return Verdict(Outcome.MALFORMED, detail=f"rcode {rcode}")
    return judge_answers(check, reply.addresses(question), other=len(reply.answers))


def judge_answers(check: Check, answers: tuple[str, ...], other: int = 0) -> Verdict:
    """NOERROR: compare the answers of the asked type with what the check expects."""
    if not answers:
        detail = f"{other} answer(s) of other types" if other else ""
        return Verdict(Outcome.NODATA, detail=detail)
    if check.expect_rcode == "NXDOMAIN":
        return Verdict(Outcome.WRONG_ANSWER, answers, "expected NXDOMAIN")
    expected = check.expect_addresses
    if expected is not None and set(answers) != expected and {
            _canonical(a) for a in answers} != {_canonical(e) for e in expected}:
        return Verdict(Outcome.WRONG_ANSWER, answers, "expected " + ",".join(sorted(expected)))
    return Verdict(Outcome.OK, answers)


def _canonical(text: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(text))
    return text


UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                                errno.EPERM})  # EPERM: a local firewall refused the packet


def socket_error_outcome(exc: OSError) -> Outcome:
    """A send, connect or receive error: unreachable (ICMP, refused, firewall) or error."""
    if isinstance(exc, ConnectionRefusedError) or exc.errno in UNREACHABLE_ERRNOS:
        return Outcome.UNREACHABLE
    return Outcome.ERROR


def result_of(base: ProbeResult, check: Check, question: wire.Question,
              event: wire.Reply | wire.Malformed | OSError, rtt: float) -> ProbeResult:
    """The ProbeResult of one exchange whose reply (or receive error) was ``event``."""
    if isinstance(event, OSError):
        outcome = socket_error_outcome(event)
        if outcome is Outcome.ERROR and getattr(event, "errno", None) in UNREACHABLE_ERRNOS:
            outcome = Outcome.UNREACHABLE
        return replace(base, outcome=outcome, rtt_seconds=rtt, detail=str(event))
    if isinstance(event, wire.Malformed):
        return replace(base, outcome=Outcome.MALFORMED, rtt_seconds=rtt, detail=event.reason)
    verdict = classify(check, event, question)
    return replace(base, outcome=verdict.outcome, rcode=event.rcode_text,
                   answers=verdict.answers, rtt_seconds=rtt, detail=verdict.detail,
                   flags=event.flags, records=tuple(r.text for r in event.answers))


def replace(result: ProbeResult, **changes: Any) -> ProbeResult:
    return dataclasses.replace(result, **changes)
