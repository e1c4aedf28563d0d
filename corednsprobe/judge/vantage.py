"""Vantages: the per-pod verdicts of several replicas, on several nodes, combined.

Owns: what one replica's view of the pods is (``VantageView``, and its JSON
shape as ``GET /vantage`` serves it, read back without trusting it); which
views are fresh enough to count (``max_age``); which vantages are isolated (a
vantage that judges every pod unhealthy while other vantages judge those pods
healthy: that node has the problem, so its views are set aside); the quorum
(a pod is unhealthy for the verdict only when vantages on at least ``quorum``
distinct nodes judge it so, capped at the number of nodes holding a fresh
verdict on it); the ``path`` finding (a pod unhealthy from some nodes and
healthy from others: the path from those nodes to the pod's node, not the
pod); and the final word on a diagnosis made over the combined healths.
Never does: I/O, keep time (``now`` is passed in), or decide a restart: the
remediation policy acts on the verdict as before, and a pod that fails the
quorum simply never becomes a candidate.

With a single vantage the combination is the identity: each unhealthy pod is
agreed by that one node, and the verdict says ``vantages=1``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corednsprobe.model import (
    CheckWindow,
    Diagnosis,
    DiagnosisState,
    Evidence,
    Health,
    HealthState,
    PathEvidence,
    TargetKey,
    TargetKind,
)

JUDGED = (HealthState.HEALTHY, HealthState.UNHEALTHY)
VIEW_VERSION = 1
MAX_TARGETS = 10_000  # more pods than any CoreDNS has: a bigger view is not read


def max_age(interval: float, deadline: float) -> float:
    """How old a view may be and still count: three rounds and one pull's deadline
    (a replica judges once a round; the leader pulls once a round)."""
    return 3 * interval + deadline


@dataclass(frozen=True, slots=True)
class PodJudgement:
    """One replica's verdict on one pod, with the window it rests on."""

    pod: str
    uid: str
    state: HealthState
    samples: int = 0
    failures: int = 0
    udp_only: int = 0
    outcomes: tuple[tuple[str, int], ...] = ()
    since: float = 0.0
    checks: tuple[CheckWindow, ...] = ()

    @classmethod
    def of(cls, h: Health) -> PodJudgement:
        pod = h.target.pod
        assert pod is not None
        return cls(pod.name, pod.uid, h.state, h.samples, h.failures, h.udp_only, h.outcomes,
                   h.since, h.checks)

    def health(self, like: Health) -> Health:
        """This verdict as a Health of ``like``'s target (the leader's own)."""
        return dataclasses.replace(like, state=self.state, samples=self.samples,
                                   failures=self.failures, udp_only=self.udp_only,
                                   outcomes=self.outcomes, since=self.since,
                                   checks=self.checks, grace_reason="")


@dataclass(frozen=True, slots=True)
class VantageView:
    """What one replica judged, where, and when (unix seconds on the reader's clock)."""

    pod: str  # the replica's pod name
    node: str  # the node it runs on
    at: float
    judgements: tuple[PodJudgement, ...] = ()

    def by_uid(self) -> dict[str, PodJudgement]:
        return {j.uid: j for j in self.judgements if j.uid}

    def as_doc(self, now: float) -> dict[str, Any]:
        """The ``GET /vantage`` document; ``age`` (seconds) lets the reader place the
        judgement on its own clock without trusting ours."""
        return {"version": VIEW_VERSION, "pod": self.pod, "node": self.node, "at": self.at,
                "age": round(max(0.0, now - self.at), 3),
                "targets": [{"pod": j.pod, "uid": j.uid, "state": j.state.value,
                             "samples": j.samples, "failures": j.failures,
                             "udp_only": j.udp_only, "outcomes": dict(j.outcomes),
                             "since": j.since,
                             "checks": {c.check: [c.samples, c.failures] for c in j.checks}}
                            for j in self.judgements]}


def own_view(pod: str, node: str, healths: Mapping[TargetKey, Health], at: float) -> VantageView:
    """This replica's view: its verdict on every pod it judges."""
    return VantageView(pod, node, at, tuple(
        PodJudgement.of(h) for h in healths.values()
        if h.target.kind is TargetKind.POD and h.target.pod is not None))


def read_view(doc: Any, received: float) -> VantageView:
    """A ``GET /vantage`` answer as a VantageView judged at ``received - age``;
    ValueError for anything else (a peer's answer is never trusted to be well-formed)."""
    if not isinstance(doc, dict) or doc.get("version") != VIEW_VERSION:
        raise ValueError("not a vantage view of a known version")
    age = _number(doc.get("age"), "age")
    targets = doc.get("targets")
    if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
        raise ValueError("targets is not a list of a sane length")
    return VantageView(_text(doc.get("pod"), "pod"), _text(doc.get("node"), "node", empty=True),
                       received - age, tuple(_judgement(t) for t in targets))


def _judgement(t: Any) -> PodJudgement:
    if not isinstance(t, dict):
        raise ValueError("a target is not an object")
    outcomes = t.get("outcomes") or {}
    checks = t.get("checks") or {}
    if not isinstance(outcomes, dict) or not isinstance(checks, dict):
        raise ValueError("outcomes or checks is not an object")
    windows = []
    for name, pair in checks.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("a check window is not [samples, failures]")
        windows.append(CheckWindow(str(name), _count(pair[0]), _count(pair[1])))
    return PodJudgement(
        _text(t.get("pod"), "pod"), _text(t.get("uid"), "uid", empty=True),
        HealthState(str(t.get("state"))), _count(t.get("samples")), _count(t.get("failures")),
        _count(t.get("udp_only")), tuple((str(k), _count(v)) for k, v in outcomes.items()),
        _number(t.get("since", 0.0), "since"), tuple(windows))


def _text(value: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > 253 or (not value and not empty):
        raise ValueError(f"{what} is not a name")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ValueError("a count is not a small whole number")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} is not a number of seconds")
    return float(value)


@dataclass(frozen=True, slots=True)
class Combined:
    """The views combined: healths to diagnose over, and what the combination found."""

    healths: dict[TargetKey, Health]
    vantages: tuple[VantageView, ...]  # fresh and counted (isolated ones excluded)
    isolated: tuple[VantageView, ...] = ()
    stale: tuple[VantageView, ...] = ()
    agreed: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    paths: tuple[PathEvidence, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted({v.node for v in self.vantages}))


def combine(own: VantageView, peers: Iterable[VantageView], healths: Mapping[TargetKey, Health],
            *, quorum: int, now: float, oldest: float) -> Combined:
    """Combine this replica's healths (``own`` is their view) with the peers' views.

    A peer view older than ``oldest`` seconds is stale and ignored; one with this
    replica's pod name is ignored (ours is ``own``). Each pod's combined health:
    unhealthy when vantages on ``min(quorum, nodes with a verdict)`` distinct nodes
    judge it unhealthy; else healthy when some vantage judges it healthy (a ``path``
    when others judge it unhealthy); else this replica's own health.
    """
    fresh: list[VantageView] = [own]
    stale: list[VantageView] = []
    seen = {own.pod}
    for v in sorted(peers, key=lambda v: v.pod):
        if v.pod in seen:
            continue
        seen.add(v.pod)
        (fresh if now - v.at <= oldest else stale).append(v)
    isolated = _isolated(fresh)
    counted = [v for v in fresh if v not in isolated]
    indexed = [(v, v.by_uid()) for v in counted]
    merged: dict[TargetKey, Health] = {}
    agreed: dict[str, tuple[str, ...]] = {}
    paths: list[PathEvidence] = []
    own_counts = own not in isolated
    for key, h in healths.items():
        pod = h.target.pod
        if h.target.kind is not TargetKind.POD or pod is None:
            merged[key] = h
            continue
        verdicts = [(v, j[pod.uid]) for v, j in indexed if pod.uid in j]
        sick = [(v, j) for v, j in verdicts if j.state is HealthState.UNHEALTHY]
        well = [(v, j) for v, j in verdicts if j.state is HealthState.HEALTHY]
        sick_nodes = sorted({v.node for v, _ in sick})
        well_nodes = sorted({v.node for v, _ in well})
        needed = min(quorum, len(set(sick_nodes) | set(well_nodes)))
        if sick and len(sick_nodes) >= needed:
            agreed[pod.name] = tuple(sick_nodes)
            merged[key] = h if own_counts and h.state is HealthState.UNHEALTHY \
                else sick[0][1].health(h)
        elif well:
            if sick:
                paths.append(PathEvidence(pod.name, pod.node, tuple(sick_nodes),
                                          tuple(well_nodes)))
            merged[key] = h if own_counts and h.state is HealthState.HEALTHY \
                else well[0][1].health(h)
        elif own_counts or h.state is HealthState.GRACE:
            merged[key] = h
        else:
            merged[key] = dataclasses.replace(h, state=HealthState.UNKNOWN)
    return Combined(merged, tuple(counted), isolated, tuple(stale), agreed, tuple(paths))


def _isolated(views: Sequence[VantageView]) -> tuple[VantageView, ...]:
    """Vantages that judge every pod they judge (two or more) unhealthy, while each of
    those pods is judged healthy by some vantage that is not itself all-sick."""
    def all_sick(v: VantageView) -> bool:
        judged = [j for j in v.judgements if j.state in JUDGED]
        return len(judged) >= 2 and all(j.state is HealthState.UNHEALTHY for j in judged)

    sound = [v.by_uid() for v in views if not all_sick(v)]
    out = []
    for v in views:
        if not all_sick(v):
            continue
        sick = [j.uid for j in v.judgements if j.state is HealthState.UNHEALTHY]
        if all(any(s.get(uid) is not None and s[uid].state is HealthState.HEALTHY
                   for s in sound) for uid in sick):
            out.append(v)
    return tuple(out)


KEEP = (DiagnosisState.SYNCING, DiagnosisState.NO_SERVICE, DiagnosisState.NO_ENDPOINTS)
QUIET = (DiagnosisState.HEALTHY, DiagnosisState.SERVICE_PATH, DiagnosisState.UPSTREAM)


def conclude(d: Diagnosis, c: Combined) -> Diagnosis:
    """The diagnosis made over ``c.healths``, with what the vantages found: the agreeing
    nodes in each unhealthy pod's evidence, ``path`` or ``vantage_isolated`` where the
    verdict would otherwise be quiet, and ``vantages=N`` in the reason."""
    if d.state in KEEP:
        return d
    n = len(c.vantages)
    ev = d.evidence or Evidence()
    evidence = dataclasses.replace(
        ev, vantages=n, paths=c.paths, isolated=tuple(sorted({v.node for v in c.isolated})),
        unhealthy=tuple(dataclasses.replace(p, vantages=c.agreed.get(p.name, ()))
                        for p in ev.unhealthy))
    said = f"vantages={n}"
    if d.state is DiagnosisState.POD:
        agreed = "; ".join(f"{t.name} unhealthy from {','.join(c.agreed.get(t.name, ()))}"
                           for t in d.candidates)
        return Diagnosis(d.state, f"{d.reason} ({said}: {agreed})", d.candidates, evidence)
    if c.paths and d.state in QUIET:
        broken = "; ".join(f"{p.pod} {p.summary}" for p in c.paths)
        return Diagnosis(DiagnosisState.PATH,
                         f"a broken path, not a sick pod ({said}): {broken}; no restart",
                         (), evidence)
    if c.isolated and d.state in QUIET:
        nodes = ", ".join(sorted({v.node for v in c.isolated}))
        others = ", ".join(c.nodes)
        return Diagnosis(DiagnosisState.VANTAGE_ISOLATED,
                         f"the vantage on {nodes} sees every pod unhealthy while the vantages "
                         f"on {others} see them healthy: that node has the problem, not "
                         f"CoreDNS; its views are set aside ({said})", (), evidence)
    extra = f"; paths: {len(c.paths)}" if c.paths else ""
    return Diagnosis(d.state, f"{d.reason} ({said}{extra})", d.candidates, evidence)
