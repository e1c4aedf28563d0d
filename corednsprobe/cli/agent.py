"""``corednsprobe agent``: the probe pod's only process.

Owns: reading the one JSON spec argument (reach/agentlines.py), probing its
targets on the same fixed-rate schedule as ``run`` (probe/rounds.py with the
probe engine), and printing one compact JSON line per result on stdout,
written whole and at once as each probe ends; exiting 0 at the spec's
deadline or on SIGTERM/SIGINT, 2 on a malformed spec.
Never does: talk to the Kubernetes API, judge a result or decide which
checks a target gets (the outside process decided them from the API's truth).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from corednsprobe import __version__
from corednsprobe.model import Check, ProbeResult, RoundReport, Target, TargetSet
from corednsprobe.probe.checks import Checks
from corednsprobe.probe.engine import Probe, Prober
from corednsprobe.probe.rounds import Rounds
from corednsprobe.reach.agentlines import AgentSpec, SpecError, hello_line, parse_spec, result_line

EXIT_OK = 0
EXIT_USAGE = 2


class _AgentChecks(Checks):
    """The checks the spec gives each target (the catalogue's fresh canary names kept)."""

    __slots__ = ("_table",)

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec.domain, spec.namespace)
        object.__setattr__(self, "_table", spec.checks)

    def for_target(self, target: Target, expected: frozenset[str]) -> tuple[Check, ...]:
        return self._table.get(target.key, ())  # type: ignore[attr-defined, no-any-return]

    def qname(self, check: Check) -> str | None:
        if check.name == "nxdomain":  # the canary: a fresh name under the zone it asks
            import secrets

            return f"corednsprobe-{secrets.token_hex(6)}.{check.qname}"
        return None


class _Fixed:
    """The spec's TargetSet, which never changes for the life of the agent."""

    def __init__(self, ts: TargetSet) -> None:
        self.current = ts


class _Printing:
    """The probe engine, with each result written out as its probe ends."""

    def __init__(self, prober: Prober, emit: Callable[[ProbeResult], None]) -> None:
        self.prober = prober
        self.emit = emit

    def start(self, target: Target, check: Check, qname: str | None,
              on_done: Callable[[ProbeResult], None]) -> Probe:
        emit = self.emit

        def done(result: ProbeResult) -> None:
            emit(result)
            on_done(result)

        return self.prober.start(target, check, qname, done)

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        result = await self.prober.probe(target, check, qname)
        self.emit(result)
        return result


def _writer(out: BinaryIO | int) -> Callable[[bytes], None]:
    if isinstance(out, int):
        fd = out

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        return write

    def write_stream(data: bytes) -> None:
        out.write(data)
        out.flush()
    return write_stream


async def run_agent(spec: AgentSpec, out: BinaryIO | int = 1,
                    stop: asyncio.Event | None = None) -> int:
    """Probe until the spec's duration is over (or ``stop``); one line per result."""
    write = _writer(out)
    write(hello_line(__version__, spec))
    prober = Prober(spec.timeout)
    engine = _Printing(prober, lambda r: write(result_line(r)))

    def ignore(report: RoundReport) -> None:
        pass

    rounds = Rounds(_Fixed(spec.targets), _AgentChecks(spec), engine, ignore,
                    interval=spec.interval, timeout=spec.timeout,
                    max_in_flight=spec.max_in_flight)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    count = max(1, math.floor(spec.duration / spec.interval))
    work = asyncio.ensure_future(_in_phase(rounds, count, spec))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], timeout=spec.duration,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stopped):
            task.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return EXIT_OK


async def _in_phase(rounds: Rounds, count: int, spec: AgentSpec) -> None:
    """Start the rounds at the next phase + k·interval (the service's schedule, a little
    ahead, so that each result is there when the service asks for it)."""
    if spec.phase is not None:
        await asyncio.sleep((spec.phase - time.time()) % spec.interval)
    await rounds.run_rounds(count)


def main(spec_text: str) -> int:
    """The command: exit 2 with the reason for a malformed spec, else probe and exit 0."""
    import uvloop

    try:
        spec = parse_spec(spec_text)
    except SpecError as exc:
        print(f"corednsprobe agent: invalid spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return uvloop.run(run_agent(spec))
    except BrokenPipeError:  # the reader went away: nobody is left to tell
        return EXIT_OK
