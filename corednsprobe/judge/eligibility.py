"""Eligibility: the one rule for whether a pod may be judged or restarted now.

Owns: the grace rule (terminating, not ready, younger than ``min_pod_age``) and
the words that explain it. The tracker keeps no outcomes of a pod in grace and
the remediation policy never restarts one; both ask this function.
Never does: I/O or reading a clock — ``now`` is always passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corednsprobe.model import PodRef


class GraceReason(StrEnum):
    """Why a pod is in grace; the values are Health.grace_reason."""

    TERMINATING = "terminating"
    NOT_READY = "not_ready"
    TOO_YOUNG = "too_young"


@dataclass(frozen=True, slots=True)
class Grace:
    """A pod that must be neither judged nor restarted now, and why."""

    reason: GraceReason
    detail: str  # one sentence naming the pod, for logs and Events


def pod_grace(pod: PodRef, now: float, min_pod_age: float) -> Grace | None:
    """Why ``pod`` must not be judged or restarted at ``now``, or None when it may be."""
    if pod.terminating:
        return Grace(GraceReason.TERMINATING, f"{pod.name} is already terminating")
    if not pod.ready:
        return Grace(GraceReason.NOT_READY, f"{pod.name} is not ready")
    if pod.created_at is not None and now - pod.created_at < min_pod_age:
        age = now - pod.created_at
        return Grace(GraceReason.TOO_YOUNG,
                     f"{pod.name} is {age:.0f}s old (< {min_pod_age:g}s)")
    return None
