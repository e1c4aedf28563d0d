"""The probe engine: one check against one target, one :class:`ProbeResult` back.

Owns: sending the question, matching the reply, the deadline, RTT and the TCP
re-ask; it hands what came back to classify.py for its :class:`Outcome`.
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

The application view (a stub resolver through aiodns) is in appview.py, and
what a matched reply means (its Outcome) in classify.py.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from corednsprobe.addr import normal_address
from corednsprobe.model import Check, IgnoredReply, Outcome, ProbeResult, Target
from corednsprobe.probe import wire
from corednsprobe.probe.appview import application_view
from corednsprobe.probe.classify import replace, result_of, socket_error_outcome


class _Exchange:
    """One UDP query's receiving side on a connected socket, read with ``add_reader``
    (a datagram transport per probe costs twice the CPU): resolves ``done`` with
    the first acceptable event, and hands every datagram it ignores to
    ``on_ignored`` with the reason."""

    def __init__(self, sock: socket.socket, query_id: int, question: wire.Question,
                 source: tuple[str, int],
                 done: asyncio.Future[tuple[float, wire.Reply | wire.Malformed | OSError]],
                 on_ignored: Callable[[IgnoredReply], None] | None = None) -> None:
        self.sock = sock
        self.query_id = query_id
        self.question = question
        self.source = source
        self.done = done
        self.on_ignored = on_ignored
        self.ignored = 0

    def ignore(self, reason: IgnoredReply) -> None:
        self.ignored += 1
        if self.on_ignored is not None:
            self.on_ignored(reason)

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
            self.ignore(IgnoredReply.OTHER_SOURCE)
            return
        parsed = wire.parse(data)
        reason = why_not_ours(parsed, self.query_id, self.question)
        if reason is not None:
            self.ignore(reason)
            return
        self.done.set_result((received, parsed))


def why_not_ours(reply: wire.Reply | wire.Malformed, query_id: int, question: wire.Question
                 ) -> IgnoredReply | None:
    """None when ``reply`` answers the probe: a response with its ID and its question.

    A message that cannot be read that far (a 1-byte datagram, one cut short in
    its header or question) is never the probe's reply, so a spoofed packet
    cannot end a probe as ``malformed``; one that carries the probe's ID and
    question but breaks later (in its answers) is, and is malformed.
    """
    if reply.id is None or (isinstance(reply, wire.Malformed) and reply.question is None):
        return IgnoredReply.UNREADABLE
    if reply.id != query_id:
        return IgnoredReply.OTHER_ID
    if not reply.qr:
        return IgnoredReply.NOT_A_RESPONSE
    if reply.question is None or not reply.question.matches(question):
        return IgnoredReply.OTHER_QUESTION
    return None


class Prober:
    """Asks one check of one target. Holds no per-target state; safe to share."""

    def __init__(self, timeout: float, *, tcp_reask: bool = True, edns: bool = False,
                 tcp_only: bool = False,
                 on_ignored: Callable[[IgnoredReply], None] | None = None) -> None:
        self.timeout = timeout
        # Told of every datagram a probe's socket ignored (spoofed or stray), with why.
        self.on_ignored = on_ignored
        self.tcp_reask = tcp_reask
        self.edns = edns
        # Only for paths that carry TCP alone (kubectl port-forward); never the default.
        self.tcp_only = tcp_only

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        """Ask once and classify; ``qname`` overrides the check's name (canaries)."""
        name = qname or check.qname
        if check.application_view:
            return await application_view(target, check, name, self.timeout)
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
        source = (normal_address(target.address), target.port)
        try:
            sock = _connected_udp_socket(source)
        except OSError as exc:
            return replace(base, outcome=socket_error_outcome(exc), detail=str(exc))
        exchange = _Exchange(sock, query_id, question, source, done, self.on_ignored)
        fd = sock.fileno()
        loop.add_reader(fd, exchange.on_readable)
        try:
            deadline = loop.time() + self.timeout
            sent = time.perf_counter()
            sock.send(wire.with_id(template, query_id))
            async with asyncio.timeout_at(deadline):
                received, event = await done
        except TimeoutError:
            detail = f"no acceptable reply in {self.timeout:g}s"
            if exchange.ignored:
                detail += f" ({exchange.ignored} datagram(s) ignored)"
            return replace(base, outcome=Outcome.TIMEOUT, detail=detail)
        except OSError as exc:  # the send itself failed (EPERM, no route, refused)
            return replace(base, outcome=socket_error_outcome(exc), detail=str(exc))
        finally:
            loop.remove_reader(fd)
            sock.close()
        return result_of(base, check, question, event, received - sent)

    async def _with_tcp_view(self, udp: ProbeResult, template: bytes) -> ProbeResult:
        tcp = await self._tcp(udp.target, udp.check, udp.qname, template)
        tcp_text = f"tcp {tcp.outcome.value}"
        if tcp.rtt_seconds is not None:
            tcp_text += f" in {tcp.rtt_seconds * 1000:.1f} ms"
        detail = f"{udp.detail}; {tcp_text}" if udp.detail else tcp_text
        return replace(udp, udp_only=tcp.ok, detail=detail)

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
            return replace(base, outcome=Outcome.TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            return replace(base, outcome=Outcome.MALFORMED, detail=f"tcp: {exc}")
        except OSError as exc:
            return replace(base, outcome=socket_error_outcome(exc), detail=str(exc))
        finally:
            if writer is not None:
                writer.close()
        received = time.perf_counter()
        parsed = wire.parse(data)
        if isinstance(parsed, wire.Reply) and (
                parsed.id != query_id or parsed.question is None
                or not parsed.question.matches(question)):
            return replace(base, outcome=Outcome.MALFORMED, detail="tcp reply to another query")
        return result_of(base, check, question, parsed, received - sent)


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
