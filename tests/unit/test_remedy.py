"""The remediation policy, pure: each rail blocks with its reason, on an explicit clock."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from corednsprobe.kube.view import workload_of as workload_from_meta
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    PodRef,
    Target,
    TargetKind,
)
from corednsprobe.remedy.history import History, Mode, Record, Result
from corednsprobe.remedy.policy import (
    Blocked,
    Decision,
    Rails,
    RemediationPolicy,
    Verdict,
    budget,
    recover,
    settle,
)

NOW = 1_760_000_000.0
WORKLOAD = "Deployment/coredns"


def pod(n: int, *, ready: bool = True, terminating: bool = False, age: float = 3600.0,
        workload: str = WORKLOAD) -> Target:
    ref = PodRef(f"coredns-abc-{n}", uid=f"uid-{n}", node=f"node-{n}", ready=ready,
                 terminating=terminating, created_at=NOW - age, workload=workload)
    return Target(TargetKind.POD, f"10.244.0.{n}", 53, ref)


P1, P2, P3 = pod(1), pod(2), pod(3)


def healths(sick: list[Target], well: list[Target]) -> dict[Any, Health]:
    out = {t.key: Health(t, HealthState.UNHEALTHY, samples=10, failures=10) for t in sick}
    out.update({t.key: Health(t, HealthState.HEALTHY, samples=10) for t in well})
    return out


def pod_problem(*sick: Target) -> Diagnosis:
    return Diagnosis(DiagnosisState.POD, "one pod sick", tuple(sick))


def done(ago: float, *, pod_n: int = 9, result: Result = Result.DONE, settled: bool = True,
         recovered: bool = False, action: Mode = Mode.EVICT, workload: str = WORKLOAD,
         retry_in: float | None = None) -> Record:
    at = NOW - ago
    return Record(at, f"coredns-abc-{pod_n}", f"uid-{pod_n}", workload, action, result,
                  ready_before=2, settled_at=at + 5 if settled else None,
                  retry_at=NOW + retry_in if retry_in is not None else None,
                  recovered_at=at + 60 if recovered else None)


def decide(*, rails: Rails | None = None, history: tuple[Record, ...] = (),
           escalated: tuple[str, ...] = (), sick: tuple[Target, ...] = (P2,),
           well: tuple[Target, ...] = (P1,), diagnosis: Diagnosis | None = None) -> Decision:
    policy = RemediationPolicy(rails or Rails())
    d = diagnosis if diagnosis is not None else pod_problem(*sick)
    return policy.decide(d, healths(list(sick), list(well)), [*well, *sick],
                         History(history, escalated), NOW)


BLOCKS: list[tuple[str, dict[str, Any], Blocked, float | None]] = [
    ("mode off", {"rails": Rails(mode=Mode.OFF)}, Blocked.MODE_OFF, None),
    ("widespread", {"diagnosis": Diagnosis(DiagnosisState.WIDESPREAD, "all sick")},
     Blocked.DIAGNOSIS_NOT_POD, None),
    ("service path with a sick pod", {"diagnosis": Diagnosis(DiagnosisState.SERVICE_PATH, "x")},
     Blocked.DIAGNOSIS_NOT_POD, None),
    ("replacement not ready yet", {"history": (done(10, settled=False),)},
     Blocked.IN_FLIGHT, NOW - 10 + 600),
    ("429 backoff", {"history": (done(5, result=Result.PDB_BLOCKED, retry_in=25),)},
     Blocked.BACKOFF, NOW + 25),
    ("cooldown", {"history": (done(100),)}, Blocked.COOLDOWN, NOW + 200),
    ("cooldown counts a crash-left 'started'", {"history": (done(100, result=Result.STARTED),)},
     Blocked.COOLDOWN, NOW + 200),
    ("cooldown counts success by other means", {"history": (done(100, result=Result.GONE),)},
     Blocked.COOLDOWN, NOW + 200),
    ("hourly budget", {"history": (done(3000, recovered=True), done(2000, recovered=True),
                                   done(1000, recovered=True))},
     Blocked.HOURLY_BUDGET, NOW + 600),
    ("zero budget", {"rails": Rails(max_per_hour=0)}, Blocked.HOURLY_BUDGET, None),
    ("gave up after 3 without recovery",
     {"history": (done(3000), done(2000), done(1000))}, Blocked.GAVE_UP, None),
    ("escalated stays escalated", {"escalated": (WORKLOAD,)}, Blocked.GAVE_UP, None),
    ("terminating", {"sick": (pod(2, terminating=True),)}, Blocked.POD_TERMINATING, None),
    ("not ready", {"sick": (pod(2, ready=False),)}, Blocked.POD_NOT_READY, None),
    ("too young", {"sick": (pod(2, age=10),)}, Blocked.POD_TOO_YOUNG, None),
    ("min ready 2 of 2", {"rails": Rails(min_ready=2)}, Blocked.MIN_READY, None),
    ("never below one ready", {"rails": Rails(min_ready=0), "well": (pod(1, ready=False),)},
     Blocked.MIN_READY, None),
]


@pytest.mark.parametrize(("inputs", "reason", "until"), [b[1:] for b in BLOCKS],
                         ids=[b[0] for b in BLOCKS])
def test_each_rail_blocks_with_its_reason(inputs: dict[str, Any], reason: Blocked,
                                          until: float | None) -> None:
    d = decide(**inputs)
    assert (d.verdict, d.reason) == (Verdict.BLOCKED, reason), d.detail
    assert d.action is None
    assert d.until == pytest.approx(until) if until is not None else d.until is None
    assert d.detail


ACTS: list[tuple[str, dict[str, Any], Mode, str]] = [
    ("clean history", {}, Mode.EVICT, "coredns-abc-2"),
    ("delete mode", {"rails": Rails(mode=Mode.DELETE)}, Mode.DELETE, "coredns-abc-2"),
    ("dry-run", {"rails": Rails(mode=Mode.DRY_RUN)}, Mode.DRY_RUN, "coredns-abc-2"),
    ("cooldown over", {"history": (done(301),)}, Mode.EVICT, "coredns-abc-2"),
    ("backoff over", {"history": (done(50, result=Result.PDB_BLOCKED, retry_in=-1),)},
     Mode.EVICT, "coredns-abc-2"),
    ("a refused attempt does not start a cooldown",
     {"history": (done(10, result=Result.PDB_BLOCKED),)}, Mode.EVICT, "coredns-abc-2"),
    ("the hour rolled over", {"history": (done(3700, recovered=True),
                                          done(2000, recovered=True),
                                          done(1000, recovered=True))},
     Mode.EVICT, "coredns-abc-2"),
    ("recovery resets the give-up count",
     {"history": (done(5000), done(4000, recovered=True), done(1000))}, Mode.EVICT,
     "coredns-abc-2"),
    ("give-up counts per workload",
     {"history": (done(9000, workload="Deployment/other"),
                  done(6000, workload="Deployment/other"),
                  done(1000, workload="Deployment/other"))},
     Mode.EVICT, "coredns-abc-2"),
    ("dry-run history spends no real budget",
     {"history": (done(3000, action=Mode.DRY_RUN, result=Result.DRY_RUN),
                  done(2000, action=Mode.DRY_RUN, result=Result.DRY_RUN),
                  done(10, action=Mode.DRY_RUN, result=Result.DRY_RUN))},
     Mode.EVICT, "coredns-abc-2"),
    ("the sickest eligible candidate", {"sick": (pod(2, age=5), P3)}, Mode.EVICT,
     "coredns-abc-3"),
    ("three pods, min ready 2", {"rails": Rails(min_ready=2), "well": (P1, P3)}, Mode.EVICT,
     "coredns-abc-2"),
]


@pytest.mark.parametrize(("inputs", "action", "pod_name"), [a[1:] for a in ACTS],
                         ids=[a[0] for a in ACTS])
def test_acts_when_every_rail_allows(inputs: dict[str, Any], action: Mode,
                                     pod_name: str) -> None:
    d = decide(**inputs)
    assert (d.verdict, d.action, d.pod) == (Verdict.ACT, action, pod_name), d.detail


def test_nothing_unhealthy_is_idle_not_blocked() -> None:
    d = decide(diagnosis=Diagnosis(DiagnosisState.HEALTHY, "fine"), sick=(), well=(P1, P2))
    assert (d.verdict, d.reason) == (Verdict.IDLE, None)


def test_dry_run_gives_up_like_the_real_thing_would() -> None:
    dry = tuple(done(ago, action=Mode.DRY_RUN, result=Result.DRY_RUN)
                for ago in (3000, 2000, 1000))
    assert decide(rails=Rails(mode=Mode.DRY_RUN), history=dry).reason is Blocked.GAVE_UP


def test_sickest_candidate_first_and_stable() -> None:
    mild = Health(P3, HealthState.UNHEALTHY, samples=10, failures=6)
    hs = {**healths([P2], [P1]), P3.key: mild}
    policy = RemediationPolicy()
    d = policy.decide(pod_problem(P3, P2), hs, [P1, P2, P3], History(), NOW)
    assert d.pod == "coredns-abc-2"


def test_settles_when_old_pod_gone_and_ready_count_back() -> None:
    rec = Record(NOW - 20, "coredns-abc-2", "uid-2", WORKLOAD, Mode.EVICT, Result.DONE,
                 ready_before=2)
    h = History((rec,))
    still_there = settle(h, [P1, pod(2, terminating=True, ready=False)], NOW)
    assert still_there.records[0].settled_at is None
    replacement_unready = settle(h, [P1, pod(4, ready=False)], NOW)
    assert replacement_unready.records[0].settled_at is None
    settled = settle(h, [P1, pod(4)], NOW)
    assert settled.records[0].settled_at == NOW
    never_replaced = settle(h, [P1], NOW + 6000)  # no timeout settles it: it stays in flight
    assert never_replaced.records[0].settled_at is None


def test_refused_and_dry_run_attempts_settle_at_once() -> None:
    h = History((done(30, result=Result.PDB_BLOCKED, settled=False),
                 done(20, action=Mode.DRY_RUN, result=Result.DRY_RUN, settled=False)))
    settled = settle(h, [P1, P2], NOW)
    assert [r.settled_at for r in settled.records] == [NOW - 30, NOW - 20]


def test_recovery_needs_every_pod_of_the_workload_judged_healthy() -> None:
    h = History((done(300), done(200)), escalated=(WORKLOAD,))
    new = pod(4)
    unknown = {P1.key: Health(P1, HealthState.HEALTHY), new.key: Health(new, HealthState.UNKNOWN)}
    assert recover(h, unknown, NOW) == h
    well = {P1.key: Health(P1, HealthState.HEALTHY), new.key: Health(new, HealthState.HEALTHY)}
    after = recover(h, well, NOW)
    assert [r.recovered_at for r in after.records] == [NOW, NOW]
    assert after.escalated == ()

    in_flight = History((done(200), done(100, settled=False)), escalated=(WORKLOAD,))
    after = recover(in_flight, well, NOW)
    assert [r.recovered_at for r in after.records] == [NOW, None]  # unsettled: not yet
    assert after.escalated == (WORKLOAD,)  # nor lifted while a restart is in flight


def test_history_survives_its_json_form() -> None:
    h = History((done(100, retry_in=5), done(50, result=Result.GONE, recovered=True)),
                escalated=(WORKLOAD,))
    back = History.from_json(h.to_json())
    assert back.escalated == h.escalated
    for a, b in zip(back.records, h.records, strict=True):
        for f in dataclasses.fields(Record):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            assert va == pytest.approx(vb, abs=1e-3) if isinstance(vb, float) else va == vb


@pytest.mark.parametrize("text", ["", "{}", "[]", '{"records": [{"at": 1}]}',
                                  '{"records": [{"at": 1, "pod": "p", "action": "reboot", '
                                  '"result": "done"}]}'])
def test_foreign_annotation_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        History.from_json(text)


def test_history_keeps_a_bounded_recent_tail() -> None:
    h = History()
    for i in range(150):
        h = h.add(done(100_000 - i * 10, recovered=True), NOW)
    assert len(h.records) == 1  # older than a day: only the newest addition is kept
    for i in range(150):
        h = h.add(done(1000 - i, result=Result.FAILED), NOW)
    assert len(h.records) == 100 and h.records[-1].at == NOW - 851


def test_budget_for_status() -> None:
    h = History((done(4000), done(1000), done(100)))
    b = budget(h, Rails(), NOW)
    assert b["used_last_hour"] == 2 and b["left_this_hour"] == 1
    assert b["cooldown_left_seconds"] == pytest.approx(200)
    assert len(b["last_actions"]) == 3


def test_workload_of_a_deployment_pod() -> None:
    meta = {"labels": {"pod-template-hash": "7db6d8ff4d"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "coredns-7db6d8ff4d",
                                 "controller": True}]}
    assert workload_from_meta(meta) == "Deployment/coredns"
    assert workload_from_meta({"ownerReferences": [{"kind": "DaemonSet", "name": "dns",
                                                    "controller": True}]}) == "DaemonSet/dns"
    assert workload_from_meta({}) == ""
