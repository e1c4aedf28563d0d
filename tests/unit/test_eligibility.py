"""Eligibility: one grace rule, seen the same by the tracker and the remediation policy."""

from __future__ import annotations

import pytest

from corednsprobe.judge.eligibility import GraceReason, pod_grace
from corednsprobe.judge.tracker import grace_reason
from corednsprobe.model import Target
from corednsprobe.remedy.policy import Blocked, pod_block
from tests.unit.helpers import SERVICE, pod


@pytest.mark.parametrize(
    ("target", "reason", "blocked"),
    [
        (pod(1), None, None),
        (pod(2, terminating=True, ready=False), GraceReason.TERMINATING,
         Blocked.POD_TERMINATING),
        (pod(3, ready=False), GraceReason.NOT_READY, Blocked.POD_NOT_READY),
        (pod(4, created=90.0), GraceReason.TOO_YOUNG, Blocked.POD_TOO_YOUNG),
        (pod(5, created=70.0), None, None),  # exactly min_pod_age old: eligible
    ],
)
def test_tracker_and_policy_share_one_rule(target: Target, reason: GraceReason | None,
                                           blocked: Blocked | None) -> None:
    assert target.pod is not None
    grace = pod_grace(target.pod, 100.0, 30.0)
    assert (grace.reason if grace else None) is reason
    assert grace_reason(target, 100.0, 30.0) == (reason.value if reason else "")
    block = pod_block(target, 100.0, 30.0)
    assert (block[0] if block else None) is blocked
    if grace is not None and block is not None:
        assert block[1] == grace.detail and target.name in grace.detail


def test_a_service_is_judged_but_never_restarted() -> None:
    assert grace_reason(SERVICE, 100.0, 30.0) == ""
    assert pod_block(SERVICE, 100.0, 30.0) == (Blocked.POD_NOT_READY, "not a pod")
