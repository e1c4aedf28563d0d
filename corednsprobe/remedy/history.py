"""Remediation history: every recent attempt to restart a pod, and its JSON form.

Owns: ``Record`` (one attempt: when, which pod and uid, the workload, the
action and how it ended), ``History`` (the attempts oldest first, and the
workloads escalated to people, real and dry-run apart), appending, concluding
and forgetting records without dropping what the rails still count, and the
JSON kept in an annotation on the Lease, so that a restart of the prober
resets nothing. Also the vocabulary both the policy and the actions use:
``Mode`` (what an attempt does) and ``Result`` (how it ended).
Never does: I/O, read a clock (``now`` is passed in), or judge whether to act.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

HOUR = 3600.0
HISTORY_KEEP_SECONDS = 86400.0
HISTORY_KEEP_RECORDS = 100  # prunable records beyond this go first; see History.add


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
        out: dict[str, Any] = {"at": iso(self.at), "pod": self.pod, "uid": self.uid,
                               "workload": self.workload, "action": self.action.value,
                               "result": self.result.value, "ready_before": self.ready_before}
        for name in ("settled_at", "retry_at", "recovered_at", "last_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = iso(value)
        if self.detail:
            out["detail"] = self.detail
        if self.count != 1:
            out["count"] = self.count
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Record:
        def when(name: str) -> float | None:
            return unix(raw[name]) if raw.get(name) else None

        return cls(unix(raw["at"]), str(raw["pod"]), str(raw.get("uid") or ""),
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



def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def unix(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
