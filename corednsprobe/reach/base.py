"""The shape every reach strategy has: what it probes, how, and what it cannot see.

Owns: the ``Reach`` protocol (a ProbeEngine that also plans its targets, runs its
background work, releases what it made and reports itself on /status), the
``Assessment`` of whether a strategy can work here, and ``ReachLost``, raised when a
strategy that worked stops working.
Never does: choose a strategy (reach/choose.py) or judge a result.

Optional methods a strategy may add (the service uses them when present):
  ``start(target, check, qname, on_done)`` -- start a probe without a task, as
  ``probe.engine.Prober.start`` does (Rounds takes this fast path when it exists).

Each strategy module provides ``async def assess(api, settings) -> Assessment`` (quick:
SelfSubjectAccessReviews, a list, one question) and, for reach/choose.py to build it,
``def build(api, settings, *, on_ignored=None) -> Reach`` (direct and port-forward are
built by choose.py itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from corednsprobe.model import Check, ProbeResult, Target, TargetSet
from corednsprobe.reach import Strategy


class ReachLost(Exception):
    """The strategy stopped working (the Service vanished, the agent pod cannot be
    scheduled, the API refuses the tunnel): ``str(exc)`` is the reason; the service logs
    ``reach_lost`` with it and, under auto, chooses again (never a silent stall)."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """Whether one strategy can work from here, with these credentials."""

    strategy: Strategy
    usable: bool
    reason: str  # why usable / why not, one sentence naming what was found or missing
    needs: str  # what this strategy needs, e.g. the exact Role rules (for `reach` and exit 3)

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.value, "usable": self.usable,
                "reason": self.reason, "needs": self.needs}


class Reach(Protocol):
    """How the probes reach the pods. A Reach is a ProbeEngine (Rounds call ``probe``)."""

    strategy: Strategy
    blind_to: tuple[str, ...]  # what it cannot see, e.g. ("UDP", "the pod network")

    def plan(self, ts: TargetSet) -> TargetSet:
        """The targets this strategy probes (same generation and state as ``ts``)."""
        ...

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        """Ask once and classify; the result's ``reach`` names the strategy."""
        ...

    async def run(self) -> None:
        """Background work for the life of the strategy; raises ReachLost."""
        ...

    async def aclose(self) -> None:
        """Release everything it made (pods, tunnels); idempotent."""
        ...

    def status(self) -> dict[str, Any]:
        """The /status "reach" section's strategy-specific part."""
        ...


class NoReach(Exception):
    """No strategy can work here (or the one asked for cannot): ``str(exc)`` says, one
    paragraph per strategy, what each needs and what was missing. The CLI exits 3."""

    def __init__(self, message: str, assessments: tuple[Assessment, ...] = ()) -> None:
        super().__init__(message)
        self.assessments = assessments
