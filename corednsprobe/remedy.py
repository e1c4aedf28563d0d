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
Dry-run keeps its own history beside the real one, so a preview spends no
real budget and still shows when the real thing would have given up.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    Target,
    TargetKey,
    TargetKind,
)

HOUR = 3600.0
HISTORY_KEEP_SECONDS = 86400.0
HISTORY_KEEP_RECORDS = 100


class Mode(StrEnum):
    EVICT = "evict"
    DELETE = "delete"
    DRY_RUN = "dry-run"
    OFF = "off"


class Result(StrEnum):
    """How one attempt ended, as recorded in the history."""

    STARTED = "started"  # written before acting; left behind by a crash, it counts as done
    DONE = "done"  # the API accepted the eviction or deletion
    GONE = "gone"  # 404/409: the pod was already gone or replaced (success by other means)
    DRY_RUN = "dry_run"  # decided and reported, nothing changed
    PDB_BLOCKED = "pdb_blocked"  # 429 from a PodDisruptionBudget
    FORBIDDEN = "forbidden"  # 403: the permission is missing
    FAILED = "failed"  # any other error answer, or no answer


DISRUPTIVE = frozenset({Result.STARTED, Result.DONE, Result.GONE, Result.DRY_RUN})


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
        for name in ("settled_at", "retry_at", "recovered_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = _iso(value)
        if self.detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Record:
        def when(name: str) -> float | None:
            return _unix(raw[name]) if raw.get(name) else None

        return cls(_unix(raw["at"]), str(raw["pod"]), str(raw.get("uid") or ""),
                   str(raw.get("workload") or ""), Mode(raw["action"]), Result(raw["result"]),
                   int(raw.get("ready_before") or 0), when("settled_at"), when("retry_at"),
                   when("recovered_at"), str(raw.get("detail") or ""))


@dataclass(frozen=True, slots=True)
class History:
    """Every recent attempt, oldest first, and the workloads escalated to people."""

    records: tuple[Record, ...] = ()
    escalated: tuple[str, ...] = ()

    def of_kind(self, dry_run: bool) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.dry_run == dry_run)

    def add(self, record: Record, now: float) -> History:
        kept = [r for r in self.records if now - r.at < HISTORY_KEEP_SECONDS]
        kept.append(record)
        return dataclasses.replace(self, records=tuple(kept[-HISTORY_KEEP_RECORDS:]))

    def replace_last(self, record: Record) -> History:
        """Swap the newest record for its updated self (same attempt, new result)."""
        if not self.records:
            return self.add(record, record.at)
        return dataclasses.replace(self, records=(*self.records[:-1], record))

    def escalate(self, workload: str) -> History:
        if workload in self.escalated:
            return self
        return dataclasses.replace(self, escalated=(*self.escalated, workload))

    def to_json(self) -> str:
        return json.dumps({"version": 1, "records": [r.as_dict() for r in self.records],
                           "escalated": list(self.escalated)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> History:
        """Parse the Lease annotation; raise ValueError when it is not ours."""
        try:
            raw = json.loads(text)
            records = tuple(Record.from_dict(r) for r in raw["records"])
            escalated = tuple(str(w) for w in raw.get("escalated") or ())
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a remediation history: {exc}") from None
        return cls(records, escalated)


@dataclass(frozen=True, slots=True)
class Rails:
    """The tunable limits; the defaults are the settings' defaults."""

    mode: Mode = Mode.EVICT
    cooldown: float = 300.0
    max_per_hour: int = 3
    min_ready: int = 1
    give_up_after: int = 3
    min_pod_age: float = 30.0
    settle_timeout: float = 600.0  # a replacement that never comes stops blocking after this
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


def pod_block(target: Target, now: float, min_pod_age: float) -> tuple[Blocked, str] | None:
    pod = target.pod
    if pod is None:
        return Blocked.POD_NOT_READY, "not a pod"
    if pod.terminating:
        return Blocked.POD_TERMINATING, f"{pod.name} is already terminating"
    if not pod.ready:
        return Blocked.POD_NOT_READY, f"{pod.name} is not ready"
    if pod.created_at is not None and now - pod.created_at < min_pod_age:
        age = now - pod.created_at
        return Blocked.POD_TOO_YOUNG, f"{pod.name} is {age:.0f}s old (< {min_pod_age:g}s)"
    return None


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
        records = history.of_kind(self.rails.mode is Mode.DRY_RUN)
        open_candidates = [c for c in candidates if not self.gave_up(history, workload_of(c))]
        if not open_candidates:
            return _blocked(Blocked.GAVE_UP, first, self._give_up_detail(records, first))
        return self._global_rails(records, open_candidates[0], now) or self._pod_rails(
            open_candidates, targets, now)

    def gave_up(self, history: History, workload: str) -> bool:
        if workload in history.escalated:
            return True
        records = history.of_kind(self.rails.mode is Mode.DRY_RUN)
        return unrecovered(records, workload) >= self.rails.give_up_after

    def _give_up_detail(self, records: Sequence[Record], target: Target) -> str:
        w = workload_of(target)
        return (f"{unrecovered(records, w)} remediations of {w} did not bring health back "
                f"(limit {self.rails.give_up_after}): manual intervention required")

    def _global_rails(self, records: Sequence[Record], target: Target,
                      now: float) -> Decision | None:
        r = self.rails
        unsettled = next((x for x in reversed(records) if x.disruptive and not x.dry_run
                          and x.settled_at is None and now - x.at < r.settle_timeout), None)
        if unsettled is not None:
            return _blocked(Blocked.IN_FLIGHT, target,
                            f"waiting for the replacement of {unsettled.pod} to be ready",
                            unsettled.at + r.settle_timeout)
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


def settle(history: History, targets: Sequence[Target], now: float,
           settle_timeout: float) -> History:
    """Mark the newest unsettled remediation settled once the old pod is gone and the
    ready count is back (or the wait timed out)."""
    pods = [t for t in targets if t.kind is TargetKind.POD and t.pod is not None]
    uids = {t.pod.uid for t in pods if t.pod is not None}
    names = {t.pod.name for t in pods if t.pod is not None}
    ready = len(ready_pods(pods))
    records = list(history.records)
    for i, r in enumerate(records):
        if r.settled_at is not None:
            continue
        if not r.disruptive or r.dry_run:
            records[i] = dataclasses.replace(r, settled_at=r.at)
        elif ((r.uid and r.uid not in uids) or (not r.uid and r.pod not in names)) \
                and ready >= r.ready_before:
            records[i] = dataclasses.replace(r, settled_at=now)
        elif now - r.at >= settle_timeout:
            records[i] = dataclasses.replace(r, settled_at=now,
                                             detail=(r.detail + " settle timed out").strip())
    return dataclasses.replace(history, records=tuple(records))


def recover(history: History, healths: Mapping[TargetKey, Health], now: float) -> History:
    """Mark workloads whose every pod is judged healthy as recovered; lift their escalation."""
    by_workload: dict[str, list[Health]] = {}
    for h in healths.values():
        if h.target.kind is TargetKind.POD and h.target.pod is not None:
            by_workload.setdefault(workload_of(h.target), []).append(h)
    well = {w for w, hs in by_workload.items()
            if hs and all(h.state is HealthState.HEALTHY for h in hs)}
    records = tuple(
        dataclasses.replace(r, recovered_at=now)
        if r.workload in well and r.disruptive and r.recovered_at is None
        and r.settled_at is not None else r
        for r in history.records
    )
    escalated = tuple(w for w in history.escalated if w not in well)
    return History(records, escalated)


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
        "escalated": list(history.escalated),
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
             until: float | None = None) -> Decision:
    return Decision(Verdict.BLOCKED, detail, target, None, reason, until)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _unix(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
