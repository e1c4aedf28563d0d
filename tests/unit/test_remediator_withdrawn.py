"""A restart decided on one verdict is not carried out when a newer verdict, arriving
while the pod was being read fresh, no longer names the pod."""

from __future__ import annotations

from corednsprobe.metrics import Metrics
from corednsprobe.model import Diagnosis, DiagnosisState
from corednsprobe.remedy.history import Mode
from corednsprobe.remedy.policy import Blocked, Decision, Rails, Verdict
from corednsprobe.remedy.remediator import Remediator
from tests.unit.test_remedy import NOW, P1, P2, healths, pod_problem


def remediator() -> Remediator:
    return Remediator(None, "kube-system", Rails(), leadership=None,  # type: ignore[arg-type]
                      metrics=Metrics(1.0), wall=lambda: NOW)


ACT = Decision(Verdict.ACT, "P1 is sick", P1, Mode.EVICT)


def test_a_verdict_that_still_names_the_pod_keeps_the_decision() -> None:
    r = remediator()
    r.on_diagnosis(pod_problem(P1), healths([P1], [P2]))
    assert r._still_wanted(ACT) is ACT


def test_a_newer_widespread_verdict_withdraws_the_restart() -> None:
    r = remediator()
    r.on_diagnosis(pod_problem(P1), healths([P1], [P2]))
    r.on_diagnosis(Diagnosis(DiagnosisState.WIDESPREAD, "both sick"), healths([P1, P2], []))
    d = r._still_wanted(ACT)
    assert (d.verdict, d.reason) == (Verdict.BLOCKED, Blocked.CONFIRMING)


def test_a_newer_verdict_naming_another_pod_withdraws_the_restart() -> None:
    r = remediator()
    r.on_diagnosis(pod_problem(P1), healths([P1], [P2]))
    r.on_diagnosis(pod_problem(P2), healths([P2], [P1]))
    assert r._still_wanted(ACT).verdict is Verdict.BLOCKED
