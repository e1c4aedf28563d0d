"""The application view: does a real stub resolver, as an application uses it, get an answer?

Owns: resolving a short name through a pod-style search list and ndots with
aiodns (c-ares), the way gRPC, Node.js or curl would, and mapping c-ares'
errors onto Outcomes.
Never does: serve as the per-target probe (engine.py's exact UDP exchange does
that; the reasons are in its docstring), cache, or retry.

Each call uses a fresh resolver (no cache or learned timeout carries over),
one try, our own loopback-free configuration, and closes it afterwards.
aiodns 4 has no search API, so the resolv.conf search expansion is done here
(:func:`search_candidates`) and each candidate is asked with ``query_dns``
through that fresh resolver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from corednsprobe import logs
from corednsprobe.addr import normal_address, split_host_port
from corednsprobe.model import Check, Outcome, ProbeResult, Target
from corednsprobe.probe import wire
from corednsprobe.probe.classify import Verdict, judge_answers, replace

log = logs.get(__name__)

# A resolv.conf with nothing in it: c-ares must never pick up the host's servers.
EMPTY_RESOLV_CONF = "/dev/null"


async def application_view(target: Target, check: Check, name: str,
                           deadline_seconds: float) -> ProbeResult:
    """Resolve ``name`` as a pod's stub resolver would, within ``deadline_seconds``."""
    base = ProbeResult(target, check, Outcome.ERROR, qname=name, at=time.time())
    started = time.perf_counter()
    asked: list[str] = []
    try:
        async with asyncio.timeout(deadline_seconds):
            verdict, rcode = await _search(target, check, name, deadline_seconds, asked)
    except TimeoutError:
        verdict, rcode = Verdict(Outcome.TIMEOUT), None
    except Exception as exc:  # any local failure of c-ares is a value, not a crash
        log.debug("application_view_failed", error=repr(exc), target=target.endpoint)
        verdict, rcode = Verdict(Outcome.ERROR, detail=f"{type(exc).__name__}: {exc}"), None
    elapsed = time.perf_counter() - started
    rtt = None if verdict.outcome in (Outcome.TIMEOUT, Outcome.ERROR) else elapsed
    detail = "; ".join(x for x in (verdict.detail, "asked " + ", ".join(asked)) if x)
    return replace(base, outcome=verdict.outcome, answers=verdict.answers, rcode=rcode,
                   rtt_seconds=rtt, qname=asked[-1] if asked else name, detail=detail)


def search_candidates(name: str, search: tuple[str, ...], ndots: int) -> Iterator[str]:
    """The names a resolv.conf stub resolver asks, in order (resolv.conf(5) semantics).

    A name ending in a dot is absolute. A name with at least ``ndots`` dots is
    asked as-is first, then with each search domain; otherwise the search
    domains come first and the bare name last.
    """
    if name.endswith("."):
        yield name
        return
    expanded = [f"{name}.{domain.strip('.')}." for domain in search if domain.strip(".")]
    absolute = f"{name}."
    if name.count(".") >= ndots:
        yield absolute
        yield from expanded
    else:
        yield from expanded
        yield absolute


# c-ares error numbers → (outcome, rcode the server must have sent, if known)
_ARES_ERRORS: dict[int, tuple[Outcome, str | None]] = {
    1: (Outcome.NODATA, "NOERROR"),  # ENODATA
    2: (Outcome.MALFORMED, "FORMERR"),  # EFORMERR
    3: (Outcome.SERVFAIL, "SERVFAIL"),  # ESERVFAIL
    4: (Outcome.NXDOMAIN, "NXDOMAIN"),  # ENOTFOUND
    5: (Outcome.MALFORMED, "NOTIMP"),  # ENOTIMP
    6: (Outcome.REFUSED, "REFUSED"),  # EREFUSED
    10: (Outcome.MALFORMED, None),  # EBADRESP
    11: (Outcome.UNREACHABLE, None),  # ECONNREFUSED
    12: (Outcome.TIMEOUT, None),  # ETIMEOUT
}
# Outcomes after which a stub resolver goes on with the next search candidate (c-ares).
_NEXT_CANDIDATE = {Outcome.NXDOMAIN, Outcome.NODATA, Outcome.SERVFAIL}


async def _search(target: Target, check: Check, name: str, deadline_seconds: float,
                  asked: list[str]) -> tuple[Verdict, str | None]:
    """Ask each search candidate through one fresh aiodns resolver until one answers."""
    import aiodns  # imported here: only the application view needs c-ares

    resolver = aiodns.DNSResolver(
        nameservers=[target.address], udp_port=target.port, tcp_port=target.port,
        timeout=deadline_seconds, tries=1, rotate=False, resolvconf_path=EMPTY_RESOLV_CONF,
        flags=_ares_flags(),
    )
    try:
        if [_host_of(server) for server in resolver.nameservers] != [normal_address(
                target.address)]:
            return Verdict(Outcome.ERROR, detail=f"resolver uses {resolver.nameservers}"), None
        got_nodata = False
        verdict, rcode = Verdict(Outcome.ERROR, detail="no candidate"), None
        for candidate in search_candidates(name, check.search, check.ndots):
            asked.append(candidate)
            verdict, rcode = await _ask(resolver, check, candidate)
            got_nodata |= verdict.outcome is Outcome.NODATA
            if verdict.outcome not in _NEXT_CANDIDATE:
                return verdict, rcode
        if check.expect_rcode == "NXDOMAIN" and verdict.outcome is Outcome.NXDOMAIN:
            return Verdict(Outcome.OK), rcode
        return (Verdict(Outcome.NODATA), "NOERROR") if got_nodata else (verdict, rcode)
    finally:
        await resolver.close()


async def _ask(resolver: Any, check: Check, candidate: str) -> tuple[Verdict, str | None]:
    import aiodns

    try:
        result = await resolver.query_dns(candidate, check.qtype.upper())
    except aiodns.error.DNSError as exc:
        code = exc.args[0] if exc.args else -1
        outcome, rcode = _ARES_ERRORS.get(code, (Outcome.ERROR, None))
        return Verdict(outcome, detail=f"c-ares: {exc.args[-1] if exc.args else exc}"), rcode
    qtype = wire.type_number(check.qtype)
    answers = tuple(_record_text(record) for record in result.answer if record.type == qtype)
    return judge_answers(check, answers, other=len(result.answer)), "NOERROR"


def _record_text(record: Any) -> str:
    data = record.data
    for attribute in ("addr", "cname"):
        if hasattr(data, attribute):
            return str(getattr(data, attribute))
    return wire.type_name(int(record.type))


def _ares_flags() -> int:
    import pycares

    return int(pycares.ARES_FLAG_NOSEARCH | pycares.ARES_FLAG_NOALIASES)


def _host_of(server: str) -> str:
    """``[::1]:53`` / ``127.0.0.1:53`` / ``::1`` → the address alone, normalised."""
    return normal_address(split_host_port(server, default_port=53)[0])
