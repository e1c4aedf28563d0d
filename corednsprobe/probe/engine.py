"""The probe engine: one check against one target, one :class:`ProbeResult` back.

Owns: sending the question, matching the reply, the deadline, RTT, the TCP
re-ask, and classifying what came back into an :class:`Outcome`.
Never does: know about Kubernetes, retry, cache, or raise for a DNS failure
(every path returns a ProbeResult; only cancellation propagates).

Why per-target probes do not use aiodns (c-ares), measured with aiodns 4.0.4 /
pycares 5.2.1 (see the test-bed notes):

* c-ares caches answers by default and pycares offers no switch: repeated
  probes of one name never reached the server (0 hits of 5).
* c-ares adapts its per-try timeout to the server's latency with a 250 ms
  floor: after a few fast answers, a reply at 400 ms with a 1.0 s timeout was
  reported as a timeout at 251 ms, so a configured deadline cannot be honoured.
* aiodns keeps one OS thread per resolver, i.e. per target (1,000 targets →
  1,002 threads), and it hides the rcode and the TC bit.

So a per-target probe is a purpose-built UDP exchange: exactly one packet, a
fresh random ID and a fresh socket (so a fresh source port) per probe, the
deadline on the loop's clock, replies accepted only from the target's address
and port with the probe's ID and question. The kernel's connected-socket filter
drops datagrams from other sources; the protocol checks again.

The application view (a short name through a pod-style search list and ndots)
is different: it asks "does a real stub resolver, as gRPC, Node.js or curl use
it, get an answer?" so it goes through aiodns, with a fresh resolver per call
(no cache or learned timeout carries over), one try, our own loopback-free
configuration, and it is closed afterwards. aiodns 4 has no search API, so the
resolv.conf search expansion is done here (:func:`search_candidates`) and each
candidate is asked with ``query_dns`` through that fresh resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import ipaddress
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from corednsprobe import logs
from corednsprobe.model import Check, Outcome, ProbeResult, Target
from corednsprobe.probe import wire

log = logs.get(__name__)

# A resolv.conf with nothing in it: c-ares must never pick up the host's servers.
EMPTY_RESOLV_CONF = "/dev/null"


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


class _Exchange:
    """One UDP query's receiving side on a connected socket, read with ``add_reader``
    (a datagram transport per probe costs twice the CPU): resolves ``done`` with
    the first acceptable event."""

    def __init__(self, sock: socket.socket, query_id: int, question: wire.Question,
                 source: tuple[str, int],
                 done: asyncio.Future[tuple[float, wire.Reply | wire.Malformed | OSError]]
                 ) -> None:
        self.sock = sock
        self.query_id = query_id
        self.question = question
        self.source = source
        self.done = done
        self.ignored = 0

    def on_readable(self) -> None:
        while not self.done.done():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable arrives as a receive error
                self.done.set_result((time.perf_counter(), exc))
                return
            self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        received = time.perf_counter()
        if addr is not None and (addr[0], addr[1]) != self.source:
            self.ignored += 1
            return
        parsed = wire.parse(data)
        if isinstance(parsed, wire.Malformed):
            if parsed.id is None or parsed.id == self.query_id:
                self.done.set_result((received, parsed))
            else:
                self.ignored += 1
            return
        if (parsed.id != self.query_id or not parsed.qr or parsed.question is None
                or not parsed.question.matches(self.question)):
            self.ignored += 1
            return
        self.done.set_result((received, parsed))


class Prober:
    """Asks one check of one target. Holds no per-target state; safe to share."""

    def __init__(self, timeout: float, *, tcp_reask: bool = True, edns: bool = False,
                 tcp_only: bool = False) -> None:
        self.timeout = timeout
        self.tcp_reask = tcp_reask
        self.edns = edns
        # Only for paths that carry TCP alone (kubectl port-forward); never the default.
        self.tcp_only = tcp_only

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        """Ask once and classify; ``qname`` overrides the check's name (canaries)."""
        name = qname or check.qname
        if check.application_view:
            return await self._application_view(target, check, name)
        try:
            template = wire.question_bytes(name, check.qtype, self.edns)
        except ValueError as exc:
            return ProbeResult(target, check, Outcome.ERROR, qname=name, detail=str(exc))
        if self.tcp_only:
            return await self._tcp(target, check, name, template)
        result = await self._udp(target, check, name, template)
        if self.tcp_reask and result.outcome in (Outcome.TIMEOUT, Outcome.UNREACHABLE):
            return await self._with_tcp_view(result, template)
        return result

    async def _udp(self, target: Target, check: Check, name: str, template: bytes) -> ProbeResult:
        loop = asyncio.get_running_loop()
        query_id = secrets.randbits(16)
        question = wire.question_of(template)
        base = ProbeResult(target, check, Outcome.ERROR, qname=name, at=time.time())
        done: asyncio.Future[tuple[float, wire.Reply | wire.Malformed | OSError]]
        done = loop.create_future()
        source = (_normal_address(target.address), target.port)
        try:
            sock = _connected_udp_socket(source)
        except OSError as exc:
            return _replace(base, outcome=_socket_error_outcome(exc), detail=str(exc))
        exchange = _Exchange(sock, query_id, question, source, done)
        fd = sock.fileno()
        loop.add_reader(fd, exchange.on_readable)
        try:
            deadline = loop.time() + self.timeout
            sent = time.perf_counter()
            sock.send(wire.with_id(template, query_id))
            async with asyncio.timeout_at(deadline):
                received, event = await done
        except TimeoutError:
            return _replace(base, outcome=Outcome.TIMEOUT,
                            detail=f"no acceptable reply in {self.timeout:g}s")
        except OSError as exc:  # the send itself failed (EPERM, no route, refused)
            return _replace(base, outcome=_socket_error_outcome(exc), detail=str(exc))
        finally:
            loop.remove_reader(fd)
            sock.close()
        return _result_of(base, check, question, event, received - sent)

    async def _with_tcp_view(self, udp: ProbeResult, template: bytes) -> ProbeResult:
        tcp = await self._tcp(udp.target, udp.check, udp.qname, template)
        tcp_text = f"tcp {tcp.outcome.value}"
        if tcp.rtt_seconds is not None:
            tcp_text += f" in {tcp.rtt_seconds * 1000:.1f} ms"
        detail = f"{udp.detail}; {tcp_text}" if udp.detail else tcp_text
        return _replace(udp, udp_only=tcp.ok, detail=detail)

    async def _tcp(self, target: Target, check: Check, name: str, template: bytes) -> ProbeResult:
        """The same question over TCP (2-byte length prefix) with the same deadline length."""
        query_id = secrets.randbits(16)
        question = wire.question_of(template)
        base = ProbeResult(target, check, Outcome.ERROR, qname=name, at=time.time())
        writer: asyncio.StreamWriter | None = None
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(target.address, target.port)
                query = wire.with_id(template, query_id)
                writer.write(len(query).to_bytes(2, "big") + query)
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
        except TimeoutError:
            return _replace(base, outcome=Outcome.TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            return _replace(base, outcome=Outcome.MALFORMED, detail=f"tcp: {exc}")
        except OSError as exc:
            return _replace(base, outcome=_socket_error_outcome(exc), detail=str(exc))
        finally:
            if writer is not None:
                writer.close()
        received = time.perf_counter()
        parsed = wire.parse(data)
        if isinstance(parsed, wire.Reply) and (
                parsed.id != query_id or parsed.question is None
                or not parsed.question.matches(question)):
            return _replace(base, outcome=Outcome.MALFORMED, detail="tcp reply to another query")
        return _result_of(base, check, question, parsed, received - sent)

    async def _application_view(self, target: Target, check: Check, name: str) -> ProbeResult:
        base = ProbeResult(target, check, Outcome.ERROR, qname=name, at=time.time())
        started = time.perf_counter()
        asked: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                verdict, rcode = await _search(target, check, name, self.timeout, asked)
        except TimeoutError:
            verdict, rcode = Verdict(Outcome.TIMEOUT), None
        except Exception as exc:  # any local failure of c-ares is a value, not a crash
            log.debug("application_view_failed", error=repr(exc), target=target.endpoint)
            verdict, rcode = Verdict(Outcome.ERROR, detail=f"{type(exc).__name__}: {exc}"), None
        elapsed = time.perf_counter() - started
        rtt = None if verdict.outcome in (Outcome.TIMEOUT, Outcome.ERROR) else elapsed
        detail = "; ".join(x for x in (verdict.detail, "asked " + ", ".join(asked)) if x)
        return _replace(base, outcome=verdict.outcome, answers=verdict.answers, rcode=rcode,
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
        if [_host_of(server) for server in resolver.nameservers] != [_normal_address(
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
    if server.startswith("["):
        return _normal_address(server[1:server.index("]")])
    return _normal_address(server.split(":")[0] if server.count(":") == 1 else server)


@functools.lru_cache(maxsize=65536)
def _normal_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return address


def _connected_udp_socket(source: tuple[str, int]) -> socket.socket:
    """A new UDP socket connected to the target: new source port, ICMP errors delivered."""
    family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(source)
    except OSError:
        sock.close()
        raise
    return sock


_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                                 errno.EPERM})  # EPERM: a local firewall refused the packet


def _socket_error_outcome(exc: OSError) -> Outcome:
    if isinstance(exc, ConnectionRefusedError) or exc.errno in _UNREACHABLE_ERRNOS:
        return Outcome.UNREACHABLE
    return Outcome.ERROR


def _result_of(base: ProbeResult, check: Check, question: wire.Question,
               event: wire.Reply | wire.Malformed | OSError, rtt: float) -> ProbeResult:
    if isinstance(event, OSError):
        outcome = _socket_error_outcome(event)
        if outcome is Outcome.ERROR and getattr(event, "errno", None) in _UNREACHABLE_ERRNOS:
            outcome = Outcome.UNREACHABLE
        return _replace(base, outcome=outcome, rtt_seconds=rtt, detail=str(event))
    if isinstance(event, wire.Malformed):
        return _replace(base, outcome=Outcome.MALFORMED, rtt_seconds=rtt, detail=event.reason)
    verdict = classify(check, event, question)
    return _replace(base, outcome=verdict.outcome, rcode=event.rcode_text,
                    answers=verdict.answers, rtt_seconds=rtt, detail=verdict.detail,
                    flags=event.flags)


def _replace(result: ProbeResult, **changes: Any) -> ProbeResult:
    return dataclasses.replace(result, **changes)
