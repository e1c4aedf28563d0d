"""Remediation policy: whether to restart a CoreDNS pod now, which one, and how.

Owns: the rails (mode, one remediation in flight until the replacement is
ready and the old pod gone, a cooldown between any two remediations, an hourly
budget, backoff after a refused attempt, never a pod that is terminating, not
ready or too young, never below the minimum of ready pods, give up on a
workload after N remediations that brought no recovery), and the bookkeeping
over the history they are judged against (settling, recovery). The history
itself and its JSON live in history.py.
Never does: I/O or read a clock — ``now`` (unix seconds) is always passed in.

A remediation of a workload "brought health back" when, after it settled,
every pod of that workload was judged healthy at once. Remediations that did
not are counted per workload; at ``give_up_after`` of them the workload is
escalated and left alone until it recovers (or an operator clears the Lease).
So is a workload whose attempts failed ``FAILURES_BEFORE_ESCALATION`` times in
a row, and one whose replacement never became ready within the settle
timeout (that one keeps blocking every restart: too few pods may be left).
Dry-run keeps its own history and its own escalations beside the real ones,
so a preview spends no real budget, still shows when the real thing would
have given up, and never stops the real thing.

An attempt that got no answer (or was left ``started`` by a crash) may have
taken effect: it counts as disruptive and in flight until the pod is seen
gone or terminating (then it was done), or still there and not terminating
``UNANSWERED_GRACE`` seconds later (then it changed nothing: failed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corednsprobe.judge.eligibility import GraceReason, pod_grace
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    PodRef,
    Target,
    TargetKey,
    TargetKind,
)
from corednsprobe.remedy.history import (
    HOUR,
    UNCONFIRMED,
    History,
    Mode,
    Record,
    Result,
    iso,
)

FAILURES_BEFORE_ESCALATION = 5  # failed attempts in a row on one workload
UNANSWERED_GRACE = 60.0  # an unanswered attempt whose pod is untouched this long did nothing
SETTLE_TIMEOUT = 600.0  # a replacement not ready after this is escalated (still blocking)


class Blocked(StrEnum):
    """Why nothing is restarted although a pod is unhealthy (a bounded metric label)."""

    MODE_OFF = "mode_off"
    DIAGNOSIS_NOT_POD = "diagnosis_not_pod"
    GAVE_UP = "gave_up"
    IN_FLIGHT = "in_flight"
    BACKOFF = "backoff"
    COOLDOWN = "cooldown"
    HOURLY_BUDGET = "hourly_budget"
    POD_TERMINATING = "pod_terminating"
    POD_NOT_READY = "pod_not_ready"
    POD_TOO_YOUNG = "pod_too_young"
    MIN_READY = "min_ready"
    CONFIRMING = "confirming"  # a candidate for less than the confirmation period
    POD_GONE = "pod_gone"  # read fresh: deleted, or another pod took its name
    NOT_OURS = "pod_not_ours"  # read fresh: not a pod of the DNS Service's workload
    NOT_AN_ENDPOINT = "not_an_endpoint"  # read fresh: no longer behind the DNS Service
    UNVERIFIED = "pod_unverified"  # the fresh read failed; asked again next round
    NOT_LEADER = "not_leader"  # used by the Remediator, never by the policy


class Verdict(StrEnum):
    IDLE = "idle"  # nothing is unhealthy
    ACT = "act"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    detail: str
    target: Target | None = None
    action: Mode | None = None  # EVICT, DELETE or DRY_RUN when acting
    reason: Blocked | None = None
    until: float | None = None  # when a time-bound block lifts (unix seconds)
    escalate: str = ""  # the workload to escalate to people, when the rails want that

    @property
    def pod(self) -> str:
        return self.target.name if self.target is not None else ""

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "detail": self.detail, "pod": self.pod or None,
                "action": self.action.value if self.action else None,
                "reason": self.reason.value if self.reason else None,
                "until": iso(self.until) if self.until is not None else None}



@dataclass(frozen=True, slots=True)
class Rails:
    """The tunable limits; the defaults are the settings' defaults, except ``confirm``
    and ``settle_period``, which default to 0 here (act on the first pod verdict; a
    recovery counts at once), as the pure tests of the other rails want."""

    mode: Mode = Mode.EVICT
    cooldown: float = 300.0
    max_per_hour: int = 3
    min_ready: int = 1
    give_up_after: int = 3
    min_pod_age: float = 30.0
    settle_timeout: float = SETTLE_TIMEOUT  # then escalate; it keeps blocking
    error_backoff: float = 30.0  # after a failed attempt (not a 429 with Retry-After)
    confirm: float = 0.0  # a pod must stay a candidate this long before it is acted on
    settle_period: float = 0.0  # health must hold this long for a restart to have worked


def workload_of(target: Target) -> str:
    """The workload key of a pod target; a guess from the name when the API gave none."""
    return target.pod.workload_key if target.pod is not None else ""


def ready_pods(targets: Iterable[Target]) -> set[str]:
    """Names of the pods that are ready and not terminating (addresses counted once)."""
    return {t.pod.name for t in targets
            if t.kind is TargetKind.POD and t.pod is not None and t.pod.ready
            and not t.pod.terminating}


def unrecovered(records: Iterable[Record], workload: str) -> int:
    """Remediations of ``workload`` since it last recovered."""
    count = 0
    for r in records:
        if r.workload != workload or not r.disruptive:
            continue
        count = 0 if r.recovered_at is not None else count + 1
    return count


def failures_in_a_row(records: Iterable[Record], workload: str) -> int:
    """Failed attempts on ``workload`` since anything of it last took effect or recovered."""
    count = 0
    for r in records:
        if r.workload != workload:
            continue
        if r.disruptive or r.recovered_at is not None:
            count = 0
        elif r.result is Result.FAILED:
            count += r.count
    return count


def give_up_reason(records: Sequence[Record], escalated: Sequence[str], workload: str,
                   rails: Rails) -> str:
    """Why ``workload`` is left to people (records and escalations of one kind), or ""."""
    fruitless = unrecovered(records, workload)
    if fruitless >= rails.give_up_after:
        return (f"{fruitless} remediations of {workload} did not bring health back "
                f"(limit {rails.give_up_after}): manual intervention required")
    failed = failures_in_a_row(records, workload)
    if failed >= FAILURES_BEFORE_ESCALATION:
        last = next((r for r in reversed(records) if r.workload == workload
                     and r.result is Result.FAILED), None)
        return (f"{failed} attempts in a row to restart a pod of {workload} failed"
                f"{f' (last: {last.detail})' if last and last.detail else ''}: "
                "manual intervention required")
    if workload in escalated:
        return (f"{workload} was escalated and has not recovered since: manual "
                "intervention required")
    return ""


def pod_block(target: Target, now: float, min_pod_age: float) -> tuple[Blocked, str] | None:
    pod = target.pod
    if pod is None:
        return Blocked.POD_NOT_READY, "not a pod"
    grace = pod_grace(pod, now, min_pod_age)
    return (_GRACE_BLOCK[grace.reason], grace.detail) if grace is not None else None


_GRACE_BLOCK = {
    GraceReason.TERMINATING: Blocked.POD_TERMINATING,
    GraceReason.NOT_READY: Blocked.POD_NOT_READY,
    GraceReason.TOO_YOUNG: Blocked.POD_TOO_YOUNG,
}


@dataclass(frozen=True, slots=True)
class RemediationPolicy:
    rails: Rails = field(default_factory=Rails)

    def decide(
        self,
        diagnosis: Diagnosis,
        healths: Mapping[TargetKey, Health],
        targets: Sequence[Target],
        history: History,
        now: float,
        since: Mapping[str, float] | None = None,
    ) -> Decision:
        """Act on one pod, or say why not. Pure: the same inputs give the same answer.

        ``since`` says when each candidate (by ``candidate_key``) became one and has been
        one ever since (see ``candidacy``); a pod not in it has just become one."""
        if diagnosis.state is not DiagnosisState.POD or not diagnosis.candidates:
            return _not_pod(diagnosis, healths)
        candidates = _ranked(diagnosis.candidates, healths)
        first = candidates[0]
        if self.rails.mode is Mode.OFF:
            return _blocked(Blocked.MODE_OFF, first, "remediation is off")
        dry = self.rails.mode is Mode.DRY_RUN
        records = history.of_kind(dry)
        open_candidates = [c for c in candidates if not self.gave_up(history, workload_of(c))]
        if not open_candidates:
            w = workload_of(first)
            why = give_up_reason(records, history.escalated_of(dry), w, self.rails)
            return _blocked(Blocked.GAVE_UP, first, why, escalate=w)
        return self._global_rails(records, open_candidates[0], now) or self._pod_rails(
            open_candidates, targets, now, since or {})

    def gave_up(self, history: History, workload: str) -> bool:
        """Escalated, by this kind (real or dry-run) of remediation only."""
        dry = self.rails.mode is Mode.DRY_RUN
        return bool(give_up_reason(history.of_kind(dry), history.escalated_of(dry), workload,
                                   self.rails))

    def _global_rails(self, records: Sequence[Record], target: Target,
                      now: float) -> Decision | None:
        r = self.rails
        unsettled = next((x for x in reversed(records) if x.disruptive and not x.dry_run
                          and x.settled_at is None), None)
        if unsettled is not None:
            return _in_flight(unsettled, target, now, r.settle_timeout)
        waiting = max((x.retry_at for x in records if x.retry_at and x.retry_at > now),
                      default=None)
        if waiting is not None:
            return _blocked(Blocked.BACKOFF, target,
                            f"backing off after a refused attempt for {waiting - now:.0f}s",
                            waiting)
        done = [x for x in records if x.disruptive]
        if done and now - done[-1].at < r.cooldown:
            until = done[-1].at + r.cooldown
            return _blocked(Blocked.COOLDOWN, target,
                            f"cooldown: {until - now:.0f}s left after restarting {done[-1].pod}",
                            until)
        in_hour = [x for x in done if now - x.at < HOUR]
        if len(in_hour) >= r.max_per_hour:
            return _blocked(Blocked.HOURLY_BUDGET, target,
                            f"{len(in_hour)} remediations in the last hour "
                            f"(limit {r.max_per_hour})",
                            in_hour[0].at + HOUR if in_hour else None)
        return None

    def _pod_rails(self, candidates: Sequence[Target], targets: Sequence[Target],
                   now: float, since: Mapping[str, float]) -> Decision:
        r = self.rails
        blocks = [(c, pod_block(c, now, r.min_pod_age)) for c in candidates]
        eligible = [c for c, b in blocks if b is None]
        if not eligible:
            target, first_block = blocks[0]
            assert first_block is not None
            return _blocked(first_block[0], target, first_block[1])
        target = eligible[0]
        ready = ready_pods(targets)
        floor = max(1, r.min_ready)
        if len(ready - {target.name}) < floor:
            return _blocked(Blocked.MIN_READY, target,
                            f"{len(ready)} ready pods; restarting {target.name} would leave "
                            f"fewer than {floor}")
        first_seen = since.get(candidate_key(target), now)
        if now - first_seen < r.confirm:
            return _blocked(Blocked.CONFIRMING, target,
                            f"{target.name} has been the only sick pod for "
                            f"{now - first_seen:.0f}s; confirming for {r.confirm:g}s",
                            first_seen + r.confirm)
        action = r.mode
        return Decision(Verdict.ACT, f"{action.value} {target.name}", target, action)


RESTARTABLE_KINDS = ("Deployment/", "DaemonSet/", "StatefulSet/")


@dataclass(frozen=True, slots=True)
class PodNow:
    """A pod as the API describes it just before a restart, beside the DNS Service."""

    exists: bool
    uid: str = ""
    terminating: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    workload: str = ""  # of its controller ownerReference; "" when it has none
    selector: Mapping[str, str] = field(default_factory=dict)  # the DNS Service's
    endpoint: bool = False  # the Service's endpoints name this pod's uid now


def refusal(target: Target, now: PodNow) -> tuple[Blocked, str] | None:
    """Why the pod behind ``target`` must not be restarted after all, or None.

    The view that judged it may be stale, and an endpoint can name any pod: act only
    on the very pod judged (same uid, not terminating), still an endpoint of the DNS
    Service, selected by that Service's selector and controlled by the workload the
    history counts (a Deployment, DaemonSet or StatefulSet). A pod that is gone or was
    replaced needs no restart and costs no budget."""
    pod = target.pod
    if pod is None or not pod.uid:
        return (Blocked.NOT_OURS, f"the endpoint {target.address} names no pod (no "
                "targetRef): probed and reported, never restarted")
    if not now.exists:
        return Blocked.POD_GONE, f"{pod.name} no longer exists: nothing to restart"
    if now.uid != pod.uid:
        return (Blocked.POD_GONE, f"{pod.name} is now another pod (uid {now.uid}, judged "
                f"{pod.uid}): nothing to restart")
    if now.terminating:
        return Blocked.POD_TERMINATING, f"{pod.name} is already terminating"
    selector = ",".join(f"{k}={v}" for k, v in sorted(now.selector.items()))
    if not now.selector or any(now.labels.get(k) != v for k, v in now.selector.items()):
        return (Blocked.NOT_OURS, f"{pod.name} is not selected by the DNS Service "
                f"(selector {selector or 'none'}): probed and reported, never restarted")
    counted = workload_of(target)
    if not now.workload.startswith(RESTARTABLE_KINDS) or now.workload != counted:
        return (Blocked.NOT_OURS, f"{pod.name} is controlled by {now.workload or 'nothing'}, "
                f"not by a workload of the DNS Service ({counted}): probed and reported, "
                "never restarted")
    if not now.endpoint:
        return Blocked.NOT_AN_ENDPOINT, f"{pod.name} is no longer an endpoint of the Service"
    return None


def candidate_key(target: Target) -> str:
    """How a candidate is known from round to round: its pod's uid, else its name."""
    return target.pod.uid if target.pod is not None and target.pod.uid else target.name


def candidacy(since: Mapping[str, float], diagnosis: Diagnosis,
              now: float) -> dict[str, float]:
    """When each current candidate became one, kept only while it stays one without a
    break: any verdict other than ``pod`` (a second pod turning sick, say) starts the
    confirmation period of every pod afresh, and so does a pod dropping out of it."""
    if diagnosis.state is not DiagnosisState.POD:
        return {}
    return {key: since.get(key, now) for key in map(candidate_key, diagnosis.candidates)}


def settle(history: History, targets: Sequence[Target], now: float) -> History:
    """Bring unsettled attempts up to date with the pods seen now.

    An attempt whose answer never came becomes ``done`` once its pod is gone or
    terminating, and ``failed`` (nothing changed) once the pod is still there,
    untouched, ``UNANSWERED_GRACE`` after it. A disruptive attempt settles once
    the old pod is gone and the ready count is back; until then it stays in
    flight, however long that takes (the policy escalates a slow one).
    """
    pods = {_pod_key(t.pod.uid, t.pod.name): t.pod for t in targets
            if t.kind is TargetKind.POD and t.pod is not None}
    ready = len(ready_pods(targets))
    records = list(history.records)
    for i, r in enumerate(records):
        if r.settled_at is not None:
            continue
        if not r.disruptive or r.dry_run:
            records[i] = dataclasses.replace(r, settled_at=r.at)
            continue
        pod = pods.get(_pod_key(r.uid, r.pod))
        if r.result in UNCONFIRMED:
            r = records[i] = _confirm(r, pod, now)
            if not r.disruptive:
                continue
        if pod is None and ready >= r.ready_before:
            records[i] = dataclasses.replace(r, settled_at=now)
    return dataclasses.replace(history, records=tuple(records))


def _pod_key(uid: str, name: str) -> str:
    return f"uid:{uid}" if uid else f"name:{name}"


def _confirm(r: Record, pod: PodRef | None, now: float) -> Record:
    """What an unanswered (or crash-left) attempt did, judged from its pod."""
    if pod is None or pod.terminating:
        seen = "gone" if pod is None else "terminating"
        return dataclasses.replace(r, result=Result.DONE,
                                   detail=f"{r.detail} (the pod is {seen}: it took effect)"
                                   .strip())
    if now - r.at >= UNANSWERED_GRACE:
        return dataclasses.replace(
            r, result=Result.FAILED, settled_at=now,
            detail=f"{r.detail} (the pod is still there and not terminating "
                   f"{now - r.at:.0f}s later: nothing changed)".strip())
    return r


def recover(history: History, healths: Mapping[TargetKey, Health], now: float,
            settle_period: float = 0.0) -> History:
    """Mark workloads whose every pod is judged healthy as recovered; lift their escalation,
    unless a restart of theirs is still in flight (its replacement is not there yet).

    A recovery holds only after ``settle_period``: a replacement (a pod of the workload
    created after the restart) judged unhealthy sooner takes it back, so the restarts of a
    flapping slot count as ones that did not bring health back, and an escalation is lifted
    only once health has held that long. A pod that was there before the restart and falls
    sick later is a fault of its own: it takes back nothing, else independent single-pod
    faults a few minutes apart would add up to a give-up."""
    by_workload: dict[str, list[Health]] = {}
    for h in healths.values():
        if h.target.kind is TargetKind.POD and h.target.pod is not None:
            by_workload.setdefault(workload_of(h.target), []).append(h)
    well = {w for w, hs in by_workload.items()
            if hs and all(h.state is HealthState.HEALTHY for h in hs)}
    waiting = {r.workload for r in history.records if r.settled_at is None}

    def relapsed(r: Record) -> bool:
        return any(h.state is HealthState.UNHEALTHY and _born_after(h.target, r.at)
                   for h in by_workload.get(r.workload, ()))

    def updated(r: Record) -> Record:
        if r.recovered_at is not None and now - r.recovered_at < settle_period \
                and relapsed(r):
            return dataclasses.replace(r, recovered_at=None)  # relapsed: not recovered
        if r.workload in well and r.recovered_at is None and r.settled_at is not None:
            return dataclasses.replace(r, recovered_at=now)
        return r

    records = tuple(map(updated, history.records))
    holding = {r.workload for r in records
               if r.recovered_at is not None and now - r.recovered_at < settle_period}
    lifted = well - waiting - holding
    return History(records, tuple(w for w in history.escalated if w not in lifted),
                   tuple(w for w in history.escalated_dry_run if w not in lifted))


CREATION_RESOLUTION = 1.0  # creationTimestamp is RFC 3339 in whole seconds


def _born_after(target: Target, at: float) -> bool:
    """Whether the pod was created after ``at`` (unknown: assume it may be a replacement).

    creationTimestamp drops the fraction of its second, so a replacement created in the
    same second as the restart reads up to a second earlier than it."""
    created = target.pod.created_at if target.pod is not None else None
    return created is None or created > at - CREATION_RESOLUTION


def budget(history: History, rails: Rails, now: float) -> dict[str, Any]:
    """What /status shows: budget left this hour, cooldown left, the last attempts."""
    records = history.of_kind(rails.mode is Mode.DRY_RUN)
    done = [r for r in records if r.disruptive]
    in_hour = [r for r in done if now - r.at < HOUR]
    cooldown_left = max(0.0, done[-1].at + rails.cooldown - now) if done else 0.0
    return {
        "mode": rails.mode.value,
        "used_last_hour": len(in_hour),
        "max_per_hour": rails.max_per_hour,
        "left_this_hour": max(0, rails.max_per_hour - len(in_hour)),
        "cooldown_seconds": rails.cooldown,
        "cooldown_left_seconds": round(cooldown_left, 3),
        "escalated": list(history.escalated_of(rails.mode is Mode.DRY_RUN)),
        "last_actions": [r.as_dict() for r in history.records[-10:]],
    }


def _not_pod(diagnosis: Diagnosis, healths: Mapping[TargetKey, Health]) -> Decision:
    sick = sorted((h.target for h in healths.values()
                   if h.target.kind is TargetKind.POD and h.state is HealthState.UNHEALTHY),
                  key=lambda t: t.name)
    if not sick:
        return Decision(Verdict.IDLE, diagnosis.reason)
    return _blocked(Blocked.DIAGNOSIS_NOT_POD, sick[0],
                    f"diagnosis is {diagnosis.state.value}, not pod: {diagnosis.reason}")


def _ranked(candidates: Sequence[Target], healths: Mapping[TargetKey, Health]) -> list[Target]:
    """Sickest first, then by name, so the choice is stable round to round."""
    def key(t: Target) -> tuple[float, str]:
        h = healths.get(t.key)
        return (-(h.ratio if h else 0.0), t.name)

    return sorted(candidates, key=key)


def _blocked(reason: Blocked, target: Target | None, detail: str,
             until: float | None = None, escalate: str = "") -> Decision:
    return Decision(Verdict.BLOCKED, detail, target, None, reason, until, escalate)


def _in_flight(unsettled: Record, target: Target, now: float, timeout: float) -> Decision:
    """Wait for the replacement; past the timeout, keep waiting and call for people."""
    if now - unsettled.at < timeout:
        return _blocked(Blocked.IN_FLIGHT, target,
                        f"waiting for the replacement of {unsettled.pod} to be ready",
                        unsettled.at + timeout)
    return _blocked(Blocked.IN_FLIGHT, target,
                    f"the replacement of {unsettled.pod} ({unsettled.action.value} at "
                    f"{iso(unsettled.at)}) never became ready within {timeout:g}s, or the "
                    "old pod never went: no further restart until it does; manual "
                    "intervention required", escalate=unsettled.workload)
