"""Remediation policy: whether to restart a CoreDNS pod now, which one, and how.

Owns: the rails (mode, one remediation in flight until the replacement is
ready and the old pod gone, a cooldown between any two remediations, an hourly
budget, backoff after a refused attempt, never a pod that is terminating, not
ready or too young, never below the minimum of ready pods, give up on a
workload after N remediations that brought no recovery), the history they
are judged against, its JSON form (kept on the Lease so that a restart of
the prober resets nothing), and the bookkeeping over that history (settling,
recovery).
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
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

HOUR = 3600.0
HISTORY_KEEP_SECONDS = 86400.0
HISTORY_KEEP_RECORDS = 100  # prunable records beyond this go first; see History.add
FAILURES_BEFORE_ESCALATION = 5  # failed attempts in a row on one workload
UNANSWERED_GRACE = 60.0  # an unanswered attempt whose pod is untouched this long did nothing
SETTLE_TIMEOUT = 600.0  # a replacement not ready after this is escalated (still blocking)


class Mode(StrEnum):
    EVICT = "evict"
    DELETE = "delete"
    DRY_RUN = "dry-run"
    OFF = "off"


class Result(StrEnum):
    """How one attempt ended, as recorded in the history."""

    STARTED = "started"  # written before acting; left behind by a crash, it may have acted
    DONE = "done"  # the API accepted the eviction or deletion
    NO_ANSWER = "no_answer"  # timeout or connection lost: it may have acted
    GONE = "gone"  # 404/409: the pod was already gone or replaced (success by other means)
    DRY_RUN = "dry_run"  # decided and reported, nothing changed
    PDB_BLOCKED = "pdb_blocked"  # 429 from a PodDisruptionBudget
    FORBIDDEN = "forbidden"  # 403: the permission is missing
    FAILED = "failed"  # any other error answer, or no answer


DISRUPTIVE = frozenset({Result.STARTED, Result.DONE, Result.NO_ANSWER, Result.GONE,
                        Result.DRY_RUN})
UNCONFIRMED = frozenset({Result.STARTED, Result.NO_ANSWER})  # settle() learns what happened


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
                "until": _iso(self.until) if self.until is not None else None}


@dataclass(frozen=True, slots=True)
class Record:
    """One attempt to restart one pod."""

    at: float
    pod: str
    uid: str
    workload: str
    action: Mode
    result: Result
    ready_before: int = 0  # ready pods when it acted; the replacement restores this
    settled_at: float | None = None
    retry_at: float | None = None  # no new attempt before this (429, errors)
    recovered_at: float | None = None
    detail: str = ""
    count: int = 1  # identical failures in a row, collapsed into this record
    last_at: float | None = None  # the newest of them

    @property
    def disruptive(self) -> bool:
        return self.result in DISRUPTIVE

    @property
    def dry_run(self) -> bool:
        return self.action is Mode.DRY_RUN

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": _iso(self.at), "pod": self.pod, "uid": self.uid,
                               "workload": self.workload, "action": self.action.value,
                               "result": self.result.value, "ready_before": self.ready_before}
        for name in ("settled_at", "retry_at", "recovered_at", "last_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = _iso(value)
        if self.detail:
            out["detail"] = self.detail
        if self.count != 1:
            out["count"] = self.count
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Record:
        def when(name: str) -> float | None:
            return _unix(raw[name]) if raw.get(name) else None

        return cls(_unix(raw["at"]), str(raw["pod"]), str(raw.get("uid") or ""),
                   str(raw.get("workload") or ""), Mode(raw["action"]), Result(raw["result"]),
                   ready_before=int(raw.get("ready_before") or 0),
                   settled_at=when("settled_at"), retry_at=when("retry_at"),
                   recovered_at=when("recovered_at"), detail=str(raw.get("detail") or ""),
                   count=int(raw.get("count") or 1), last_at=when("last_at"))

    def same_failure(self, other: Record) -> bool:
        """Both are the same refused or failed attempt on the same pod (to collapse)."""
        return (not self.disruptive and self.result is other.result
                and self.recovered_at is None and other.recovered_at is None
                and (self.pod, self.uid, self.workload, self.action)
                == (other.pod, other.uid, other.workload, other.action))

    def prunable(self, now: float) -> bool:
        """Whether the rails can forget it: never a disruptive one of the last hour or
        one not yet followed by recovery (the budget and the give-up count need them)."""
        return not (self.disruptive and (now - self.at < HOUR or self.recovered_at is None))


@dataclass(frozen=True, slots=True)
class History:
    """Every recent attempt, oldest first, and the workloads escalated to people — the
    real escalations and the dry-run ones apart, so a preview never blocks the real thing."""

    records: tuple[Record, ...] = ()
    escalated: tuple[str, ...] = ()
    escalated_dry_run: tuple[str, ...] = ()

    def of_kind(self, dry_run: bool) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.dry_run == dry_run)

    def escalated_of(self, dry_run: bool) -> tuple[str, ...]:
        return self.escalated_dry_run if dry_run else self.escalated

    def add(self, record: Record, now: float) -> History:
        """Append ``record``; forget old attempts, but never what the rails still count."""
        kept = [r for r in self.records
                if not r.prunable(now) or now - (r.last_at or r.at) < HISTORY_KEEP_SECONDS]
        excess = len(kept) + 1 - HISTORY_KEEP_RECORDS
        if excess > 0:
            oldest = [i for i, r in enumerate(kept) if r.prunable(now)][:excess]
            drop = set(oldest)
            kept = [r for i, r in enumerate(kept) if i not in drop]
        kept.append(record)
        return dataclasses.replace(self, records=tuple(kept))

    def conclude(self, record: Record) -> History:
        """Swap the newest record for its outcome (same attempt, new result); a failure
        that repeats the one before it is folded into that one, with a count."""
        if not self.records:
            return self.add(record, record.at)
        before = self.records[:-1]
        if before and before[-1].same_failure(record):
            first = before[-1]
            merged = dataclasses.replace(
                first, count=first.count + record.count, last_at=record.last_at or record.at,
                retry_at=record.retry_at, settled_at=record.settled_at, detail=record.detail)
            return dataclasses.replace(self, records=(*before[:-1], merged))
        return dataclasses.replace(self, records=(*before, record))

    def escalate(self, workload: str, dry_run: bool) -> History:
        if workload in self.escalated_of(dry_run):
            return self
        if dry_run:
            return dataclasses.replace(self, escalated_dry_run=(*self.escalated_dry_run,
                                                                workload))
        return dataclasses.replace(self, escalated=(*self.escalated, workload))

    def to_json(self) -> str:
        return json.dumps({"version": 2, "records": [r.as_dict() for r in self.records],
                           "escalated": list(self.escalated),
                           "escalated_dry_run": list(self.escalated_dry_run)},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> History:
        """Parse the Lease annotation; raise ValueError when it is not ours."""
        try:
            raw = json.loads(text)
            records = tuple(Record.from_dict(r) for r in raw["records"])
            escalated = tuple(str(w) for w in raw.get("escalated") or ())
            dry = tuple(str(w) for w in raw.get("escalated_dry_run") or ())
            version = int(raw.get("version") or 1)
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a remediation history: {exc}") from None
        if version < 2:  # one list for both kinds: each goes to the kind that escalated it
            dry = tuple(w for w in escalated if _escalated_by_dry_run(records, w))
            escalated = tuple(w for w in escalated if w not in dry)
        return cls(records, escalated, dry)


def _escalated_by_dry_run(records: Sequence[Record], workload: str) -> bool:
    last = next((r for r in reversed(records) if r.workload == workload and r.disruptive),
                None)
    return last is not None and last.dry_run


@dataclass(frozen=True, slots=True)
class Rails:
    """The tunable limits; the defaults are the settings' defaults."""

    mode: Mode = Mode.EVICT
    cooldown: float = 300.0
    max_per_hour: int = 3
    min_ready: int = 1
    give_up_after: int = 3
    min_pod_age: float = 30.0
    settle_timeout: float = SETTLE_TIMEOUT  # then escalate; it keeps blocking
    error_backoff: float = 30.0  # after a failed attempt (not a 429 with Retry-After)


def workload_of(target: Target) -> str:
    """The workload key of a pod target; a guess from the name when the API gave none."""
    pod = target.pod
    if pod is None:
        return ""
    return pod.workload or f"Pod/{pod.name.rsplit('-', 1)[0]}"


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
    ) -> Decision:
        """Act on one pod, or say why not. Pure: the same inputs give the same answer."""
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
            open_candidates, targets, now)

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
                   now: float) -> Decision:
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
        action = r.mode
        return Decision(Verdict.ACT, f"{action.value} {target.name}", target, action)


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


def recover(history: History, healths: Mapping[TargetKey, Health], now: float) -> History:
    """Mark workloads whose every pod is judged healthy as recovered; lift their escalation,
    unless a restart of theirs is still in flight (its replacement is not there yet)."""
    by_workload: dict[str, list[Health]] = {}
    for h in healths.values():
        if h.target.kind is TargetKind.POD and h.target.pod is not None:
            by_workload.setdefault(workload_of(h.target), []).append(h)
    well = {w for w, hs in by_workload.items()
            if hs and all(h.state is HealthState.HEALTHY for h in hs)}
    waiting = {r.workload for r in history.records if r.settled_at is None}
    records = tuple(
        dataclasses.replace(r, recovered_at=now)
        if r.workload in well and r.recovered_at is None and r.settled_at is not None else r
        for r in history.records
    )
    lifted = well - waiting
    return History(records, tuple(w for w in history.escalated if w not in lifted),
                   tuple(w for w in history.escalated_dry_run if w not in lifted))


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
                    f"{_iso(unsettled.at)}) never became ready within {timeout:g}s, or the "
                    "old pod never went: no further restart until it does; manual "
                    "intervention required", escalate=unsettled.workload)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _unix(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
