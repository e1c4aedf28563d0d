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


def test_a_recovery_is_announced_once_even_when_a_relapse_took_it_back() -> None:
    import asyncio

    from corednsprobe.remedy.history import History, Record, Result
    from corednsprobe.remedy.policy import recover
    from tests.unit.test_remedy import WORKLOAD, pod

    r = remediator()
    r.events_allowed = False  # no API here: the log line and /status are what count
    restart = Record(NOW - 100, "coredns-abc-9", "uid-9", WORKLOAD, Mode.EVICT, Result.DONE,
                     ready_before=2, settled_at=NOW - 95)
    replacement = pod(10, age=50)
    h0 = History((restart,))
    well, sick = healths([], [P1, replacement]), healths([replacement], [P1])

    async def walk() -> None:
        h1 = recover(h0, well, NOW, 300.0)  # recovered ...
        await r._announce_recovered(h0, h1, well, NOW)
        h2 = recover(h1, sick, NOW + 10, 300.0)  # ... the replacement relapses ...
        assert h2.records[0].recovered_at is None
        h3 = recover(h2, well, NOW + 20, 300.0)  # ... and recovers again
        await r._announce_recovered(h2, h3, well, NOW + 20)

    asyncio.run(walk())
    assert len(r.recoveries) == 1
