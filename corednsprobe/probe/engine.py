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

import _socket
import asyncio
import functools
import os
import secrets
import select
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from corednsprobe.addr import normal_address
from corednsprobe.model import Check, IgnoredReply, Outcome, ProbeResult, Target
from corednsprobe.probe import wire
from corednsprobe.probe.appview import application_view
from corednsprobe.probe.classify import classify, replace, result_of, socket_error_outcome

_ID_BYTES = 4096  # random bytes drawn at once: 2,048 query IDs per getrandom(2) call


class _Ids:
    """Fresh, unpredictable 16-bit query IDs from the OS's CSPRNG, drawn in batches
    (``secrets.randbits`` makes one syscall per ID)."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = _ID_BYTES

    def next(self) -> int:
        i = self._pos
        if i >= _ID_BYTES:
            self._buf, i = os.urandom(_ID_BYTES), 0
        self._pos = i + 2
        return self._buf[i] << 8 | self._buf[i + 1]


_ids = _Ids()


@functools.lru_cache(maxsize=65536)
def _endpoint(address: str, port: int) -> tuple[int, tuple[str, int]]:
    """The socket family and the normalised (address, port) replies must come from."""
    host = normal_address(address)
    return (_socket.AF_INET6 if ":" in host else _socket.AF_INET), (host, port)


def _fresh_query(name: str, qtype: str, edns: bool, nsid: bool = False
                 ) -> tuple[bytes, wire.Question]:
    """The query bytes (ID 0) and question of a name asked once (a canary): built
    directly, so that a stream of fresh names neither misses nor flushes the caches of
    ``wire.question_bytes`` and ``wire.question_of`` that the checks' fixed names hit."""
    template = wire.question_bytes.__wrapped__(name, qtype, edns, nsid)
    return template, wire.Question(wire.encode_name(name).lower(), wire.type_number(qtype))


class _Exchange:
    """One UDP query in flight: its socket, what a reply must match, its deadline.

    Reads are dispatched by the :class:`_Pump` of its loop; the first acceptable
    event (a matching reply, a receive error, the deadline or a cancel) ends it,
    closes the socket and calls ``on_done`` once with the ProbeResult.
    """

    __slots__ = (
        "at",
        "check",
        "deadline",
        "fd",
        "finished",
        "ignored",
        "name",
        "on_done",
        "pump",
        "query_id",
        "question",
        "sent",
        "sock",
        "source",
        "target",
    )

    def __init__(self, pump: _Pump, sock: _socket.socket, target: Target, check: Check,
                 name: str, query_id: int, question: wire.Question, source: tuple[str, int],
                 on_done: Callable[[ProbeResult], None]) -> None:
        self.pump = pump
        self.sock = sock
        self.fd = sock.fileno()
        self.target = target
        self.check = check
        self.name = name
        self.query_id = query_id
        self.question = question
        self.source = source
        self.at = time.time()
        self.sent = 0.0
        self.deadline = 0.0
        self.on_done = on_done
        self.ignored = 0
        self.finished = False

    def cancel(self) -> None:
        """Stop waiting without a result (the caller was cancelled)."""
        if not self.finished:
            self.finished = True
            self.pump.release(self)

    def on_readable(self) -> None:
        while not self.finished:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable arrives as a receive error
                self._end(result_of(self._base(), self.check, self.question, exc,
                                    time.perf_counter() - self.sent))
                return
            self.datagram_received(data, addr)

    def ours(self, data: bytes, addr: tuple[str | Any, int]
             ) -> wire.Reply | wire.Malformed | None:
        """The datagram parsed, when it is this probe's reply (its source, ID, QR bit
        and question); anything else is counted as ignored and gives None."""
        if addr is not None and (addr[0], addr[1]) != self.source:
            self.ignore(IgnoredReply.OTHER_SOURCE)
            return None
        parsed = wire.parse(data)
        reason = why_not_ours(parsed, self.query_id, self.question)
        if reason is not None:
            self.ignore(reason)
            return None
        return parsed

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        received = time.perf_counter()
        parsed = self.ours(data, addr)
        if parsed is None:
            return
        if isinstance(parsed, wire.Malformed):
            self._end(result_of(self._base(), self.check, self.question, parsed,
                                received - self.sent))
            return
        # the answered probe's one ProbeResult, built once (result_of would build two)
        verdict = classify(self.check, parsed, self.question)
        self._end(ProbeResult(self.target, self.check, verdict.outcome, parsed.rcode_text,
                              verdict.answers, received - self.sent, False, self.at, self.name,
                              verdict.detail, parsed.flags,
                              tuple(r.text for r in parsed.answers)))

    def ignore(self, reason: IgnoredReply) -> None:
        self.ignored += 1
        on_ignored = self.pump.on_ignored
        if on_ignored is not None:
            on_ignored(reason)

    def expire(self) -> None:
        detail = f"no acceptable reply in {self.pump.timeout:g}s"
        if self.ignored:
            detail += f" ({self.ignored} datagram(s) ignored)"
        self._end(ProbeResult(self.target, self.check, Outcome.TIMEOUT, at=self.at,
                              qname=self.name, detail=detail))

    def fail(self, exc: OSError) -> None:
        """The send itself failed (EPERM, no route, refused)."""
        self._end(ProbeResult(self.target, self.check, socket_error_outcome(exc), at=self.at,
                              qname=self.name, detail=str(exc)))

    def _base(self) -> ProbeResult:
        return ProbeResult(self.target, self.check, Outcome.ERROR, at=self.at, qname=self.name)

    def _end(self, result: ProbeResult) -> None:
        self.finished = True
        self.pump.release(self)
        self.on_done(result)


class _NsidExchange(_Exchange):
    """An exchange whose query asked for the server's NSID (RFC 5001): the reply's
    NSID goes into the result; an OPT record that cannot be read is a detail of the
    outcome, never a failure of it. Only probes that ask pay for reading it."""

    __slots__ = ()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        received = time.perf_counter()
        parsed = self.ours(data, addr)
        if parsed is None:
            return
        # the matched question is uncompressed (nothing precedes it to point at)
        nsid, problem = wire.nsid_of(data, 16 + len(self.question.wire_name))
        base = ProbeResult(self.target, self.check, Outcome.ERROR, at=self.at,
                           qname=self.name, nsid=nsid)
        result = result_of(base, self.check, self.question, parsed, received - self.sent)
        if problem:
            said = f"nsid: {problem}"
            result = replace(result, detail=f"{result.detail}; {said}" if result.detail
                             else said)
        self._end(result)


class _Pump:
    """The receiving side of every UDP exchange of one Prober on one loop.

    One epoll set, read by one ``add_reader``, holds the sockets in flight (a
    socket leaves it when closed), so a probe costs one ``epoll_ctl`` instead of
    the loop's per-fd handle; the deadlines are a FIFO (one timeout per Prober,
    so they expire in the order the probes were sent) served by one timer
    handle at the earliest deadline still pending.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float,
                 on_ignored: Callable[[IgnoredReply], None] | None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.on_ignored = on_ignored
        self.epoll = select.epoll()
        self.by_fd: dict[int, _Exchange] = {}
        self.deadlines: deque[_Exchange] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        loop.add_reader(self.epoll.fileno(), self.on_ready)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.epoll.fileno())
        if self.timer is not None:
            self.timer.cancel()
        for ex in list(self.by_fd.values()):
            ex.cancel()
        self.epoll.close()

    def begin(self, ex: _Exchange, packet: bytes) -> None:
        """Register, send and arm the deadline; a failed send ends the exchange."""
        self.by_fd[ex.fd] = ex
        self.epoll.register(ex.fd, select.EPOLLIN)
        ex.deadline = self.loop.time() + self.timeout
        ex.sent = time.perf_counter()
        try:
            ex.sock.send(packet)
        except OSError as exc:
            ex.fail(exc)
            return
        self.deadlines.append(ex)
        if self.timer is None:
            self._arm(ex.deadline)

    def release(self, ex: _Exchange) -> None:
        if self.by_fd.pop(ex.fd, None) is ex:
            ex.sock.close()  # also leaves the epoll set

    def on_ready(self) -> None:
        by_fd = self.by_fd
        for fd, _ in self.epoll.poll(0):
            ex = by_fd.get(fd)
            if ex is not None:
                ex.on_readable()

    def _arm(self, when: float) -> None:
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.timer = None
        now = self.loop.time()
        pending = self.deadlines
        while pending:
            ex = pending[0]
            if ex.finished:
                pending.popleft()
            elif ex.deadline <= now:
                pending.popleft()
                ex.expire()
            else:
                self._arm(ex.deadline)
                return


class Probe:
    """A probe started with :meth:`Prober.start`; ``cancel`` ends it without a result."""

    __slots__ = ("_now",)

    def __init__(self) -> None:
        self._now: _Exchange | asyncio.Task[ProbeResult] | None = None

    def follow(self, step: _Exchange | asyncio.Task[ProbeResult]) -> None:
        """What the probe waits on now (its UDP exchange, then perhaps a TCP re-ask)."""
        self._now = step

    def cancel(self) -> None:
        if self._now is not None:
            self._now.cancel()


def tcp_result(base: ProbeResult, check: Check, question: wire.Question, query_id: int,
               data: bytes, rtt: float) -> ProbeResult:
    """The outcome of a reply read from a TCP connection the prober opened (no blind
    spoofing there): another query's reply is ``malformed``, not ignored."""
    parsed = wire.parse(data)
    if isinstance(parsed, wire.Reply) and (
            parsed.id != query_id or parsed.question is None
            or not parsed.question.matches(question)):
        return replace(base, outcome=Outcome.MALFORMED, detail="tcp reply to another query")
    return result_of(base, check, question, parsed, rtt)


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
                 tcp_only: bool = False, nsid: bool = False,
                 on_ignored: Callable[[IgnoredReply], None] | None = None) -> None:
        self.timeout = timeout
        # Ask each server to name itself (EDNS NSID) over UDP, and keep the name in the
        # result; the queries of a Prober without it are unchanged, byte for byte.
        self.nsid = nsid
        self._exchange = _NsidExchange if nsid else _Exchange
        # Told of every datagram a probe's socket ignored (spoofed or stray), with why.
        self.on_ignored = on_ignored
        self.tcp_reask = tcp_reask
        self.edns = edns
        # Only for paths that carry TCP alone (kubectl port-forward); never the default.
        self.tcp_only = tcp_only
        self._pump: _Pump | None = None
        self._tasks: set[asyncio.Task[ProbeResult]] = set()

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        """Ask once and classify; ``qname`` overrides the check's name (canaries)."""
        done: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()

        def finish(result: ProbeResult) -> None:
            if not done.done():
                done.set_result(result)

        started = self.start(target, check, qname, finish)
        try:
            return await done
        finally:
            started.cancel()

    def start(self, target: Target, check: Check, qname: str | None,
              on_done: Callable[[ProbeResult], None]) -> Probe:
        """Start one probe on the running loop; ``on_done`` gets its ProbeResult once
        (possibly before this returns, when no socket could be made)."""
        name = qname or check.qname
        if check.application_view or self.tcp_only:
            started = Probe()
            started.follow(self._in_task(self._slow(target, check, name), on_done))
            return started
        try:
            if qname is None:  # the check's own name: built once, from the caches
                template = wire.question_bytes(name, check.qtype, self.edns, self.nsid)
                question = wire.question_of(template)
            else:  # a fresh canary name, never asked again: past the caches
                template, question = _fresh_query(name, check.qtype, self.edns, self.nsid)
        except ValueError as exc:
            on_done(ProbeResult(target, check, Outcome.ERROR, qname=name, detail=str(exc)))
            return Probe()
        pump = self._pump_here()
        family, source = _endpoint(target.address, target.port)
        query_id = _ids.next()
        started = Probe()
        on_udp = on_done
        if self.tcp_reask:
            def on_udp(result: ProbeResult) -> None:
                if result.outcome is Outcome.TIMEOUT or result.outcome is Outcome.UNREACHABLE:
                    started.follow(self._in_task(self._with_tcp_view(result, template), on_done))
                else:
                    on_done(result)
        try:
            sock = _socket.socket(family, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK)
        except OSError as exc:
            on_done(ProbeResult(target, check, socket_error_outcome(exc), at=time.time(),
                                qname=name, detail=str(exc)))
            return Probe()
        try:
            sock.connect(source)
        except OSError as exc:
            sock.close()
            on_done(ProbeResult(target, check, socket_error_outcome(exc), at=time.time(),
                                qname=name, detail=str(exc)))
            return Probe()
        exchange = self._exchange(pump, sock, target, check, name, query_id, question,
                                  source, on_udp)
        started.follow(exchange)
        pump.begin(exchange, wire.with_id(template, query_id))
        return started

    def _pump_here(self) -> _Pump:
        loop = asyncio.get_running_loop()
        pump = self._pump
        if pump is None or pump.loop is not loop:
            if pump is not None:
                pump.close()
            pump = self._pump = _Pump(loop, self.timeout, self.on_ignored)
        return pump

    def _in_task(self, coro: Coroutine[Any, Any, ProbeResult],
                 on_done: Callable[[ProbeResult], None]) -> asyncio.Task[ProbeResult]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def finished(t: asyncio.Task[ProbeResult]) -> None:
            self._tasks.discard(t)
            if not t.cancelled():
                on_done(t.result())

        task.add_done_callback(finished)
        return task

    async def _slow(self, target: Target, check: Check, name: str) -> ProbeResult:
        """The application view and TCP-only paths (neither is the per-probe hot path)."""
        if check.application_view:
            return await application_view(target, check, name, self.timeout)
        try:
            template = wire.question_bytes(name, check.qtype, self.edns)
        except ValueError as exc:
            return ProbeResult(target, check, Outcome.ERROR, qname=name, detail=str(exc))
        return await self._tcp(target, check, name, template)

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
        return tcp_result(base, check, question, query_id, data, time.perf_counter() - sent)
