"""The rails the review found leaky, pure, on an explicit clock: an unanswered eviction
holds them, dry-run escalations stay dry-run, a replacement that never comes keeps
blocking and calls for people, repeated failures escalate and never push out what
the budget counts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from corednsprobe.model import Diagnosis, DiagnosisState, Health, HealthState, Target
from corednsprobe.remedy.history import History, Mode, Record, Result
from corednsprobe.remedy.policy import (
    FAILURES_BEFORE_ESCALATION,
    UNANSWERED_GRACE,
    Blocked,
    Decision,
    PodNow,
    Rails,
    RemediationPolicy,
    Verdict,
    budget,
    candidacy,
    recover,
    refusal,
    settle,
)
from tests.unit.test_remedy import NOW, P1, P2, WORKLOAD, decide, done, healths, pod, pod_problem

P3, P4, P5 = pod(3), pod(4), pod(5)


def unanswered(ago: float, n: int = 1) -> Record:
    """Pod ``n``'s eviction reached the API server, but its answer never came."""
    return Record(NOW - ago, f"coredns-abc-{n}", f"uid-{n}", WORKLOAD, Mode.EVICT,
                  Result.NO_ANSWER, ready_before=5, detail="no answer: ServerDisconnectedError")


# -- 1: an eviction without an answer may have happened ---------------------------------

def test_an_unanswered_eviction_blocks_the_next_one_while_its_pod_terminates() -> None:
    """Five pods, A and B sick; A's eviction landed but its answer was lost; A is
    terminating 30 s later. B must wait: A's replacement is not ready."""
    a_terminating = pod(1, terminating=True, ready=False)
    targets = [a_terminating, P2, P3, P4, P5]
    h = settle(History((unanswered(30),)), targets, NOW)
    assert h.records[0].result is Result.DONE and h.records[0].settled_at is None
    d = RemediationPolicy(Rails()).decide(
        pod_problem(P2), healths([P2], [P3, P4, P5]), targets, h, NOW)
    assert (d.verdict, d.reason) == (Verdict.BLOCKED, Blocked.IN_FLIGHT), d.detail
    assert budget(h, Rails(), NOW)["used_last_hour"] == 1


def test_an_unanswered_eviction_counts_for_cooldown_and_budget_before_it_is_judged() -> None:
    h = History((unanswered(10),))
    d = decide(history=h.records)
    assert d.reason is Blocked.IN_FLIGHT
    b = budget(h, Rails(), NOW)
    assert b["used_last_hour"] == 1 and b["cooldown_left_seconds"] > 0


def test_an_unanswered_eviction_whose_pod_is_gone_was_done_and_settles_when_replaced() -> None:
    h = History((dataclasses.replace(unanswered(30), ready_before=2),))
    replacement_unready = settle(h, [P2, pod(6, ready=False)], NOW)
    assert replacement_unready.records[0].result is Result.DONE
    assert replacement_unready.records[0].settled_at is None
    replaced = settle(h, [P2, pod(6)], NOW)
    assert (replaced.records[0].result, replaced.records[0].settled_at) == (Result.DONE, NOW)


def test_an_unanswered_eviction_whose_pod_is_untouched_failed_without_disruption() -> None:
    h = History((unanswered(UNANSWERED_GRACE - 1),))
    waiting = settle(h, [P1, P2], NOW)
    assert waiting.records[0].result is Result.NO_ANSWER
    assert decide(history=waiting.records).reason is Blocked.IN_FLIGHT
    h = History((unanswered(UNANSWERED_GRACE),))
    judged = settle(h, [P1, P2], NOW)
    record = judged.records[0]
    assert (record.result, record.settled_at) == (Result.FAILED, NOW)
    assert "nothing changed" in record.detail
    assert decide(history=judged.records).verdict is Verdict.ACT  # no cooldown, no budget
    assert budget(judged, Rails(), NOW)["used_last_hour"] == 0


def test_a_started_record_left_by_a_crash_is_judged_the_same_way() -> None:
    crashed = dataclasses.replace(unanswered(UNANSWERED_GRACE), result=Result.STARTED)
    assert settle(History((crashed,)), [P1, P2], NOW).records[0].result is Result.FAILED
    evicted = settle(History((crashed,)), [pod(1, terminating=True), P2], NOW)
    assert evicted.records[0].result is Result.DONE


def test_the_new_result_survives_the_lease() -> None:
    h = History((unanswered(30),))
    assert History.from_json(h.to_json()).records[0].result is Result.NO_ANSWER


# -- 2: dry-run escalations are dry-run's own --------------------------------------------

DRY_RUNS = tuple(done(ago, action=Mode.DRY_RUN, result=Result.DRY_RUN)
                 for ago in (3000, 2000, 1000))


def test_escalations_from_dry_run_never_block_real_restarts() -> None:
    policy = RemediationPolicy(Rails(mode=Mode.DRY_RUN))
    d = policy.decide(pod_problem(P2), healths([P2], [P1]), [P1, P2], History(DRY_RUNS), NOW)
    assert d.reason is Blocked.GAVE_UP and d.escalate == WORKLOAD
    escalated = History(DRY_RUNS).escalate(WORKLOAD, dry_run=True)
    assert escalated.escalated == ()
    real = RemediationPolicy(Rails()).decide(pod_problem(P2), healths([P2], [P1]), [P1, P2],
                                             escalated, NOW)
    assert (real.verdict, real.action) == (Verdict.ACT, Mode.EVICT), real.detail
    assert RemediationPolicy(Rails(mode=Mode.DRY_RUN)).gave_up(escalated, WORKLOAD)


def test_a_real_escalation_does_not_stop_the_dry_run_preview() -> None:
    d = decide(rails=Rails(mode=Mode.DRY_RUN), escalated=(WORKLOAD,))
    assert (d.verdict, d.action) == (Verdict.ACT, Mode.DRY_RUN)


def test_an_old_lease_annotation_gives_each_escalation_to_the_kind_that_made_it() -> None:
    """Version 1 kept one list: after three dry-runs it named the workload, and switching
    to evict was blocked for good."""
    v1 = json.dumps({"version": 1, "records": [r.as_dict() for r in DRY_RUNS],
                     "escalated": [WORKLOAD, "Deployment/other"]})
    h = History.from_json(v1)
    assert h.escalated_dry_run == (WORKLOAD,) and h.escalated == ("Deployment/other",)
    d = RemediationPolicy(Rails()).decide(pod_problem(P2), healths([P2], [P1]), [P1, P2], h,
                                          NOW)
    assert (d.verdict, d.action) == (Verdict.ACT, Mode.EVICT), d.detail
    assert History.from_json(h.to_json()) == h


# -- 4: a replacement that never comes keeps blocking ------------------------------------

def test_a_replacement_that_never_comes_keeps_blocking_and_escalates() -> None:
    stuck = done(700, settled=False)
    d = decide(history=(stuck,))
    assert (d.verdict, d.reason, d.until) == (Verdict.BLOCKED, Blocked.IN_FLIGHT, None)
    assert d.escalate == WORKLOAD
    assert "never became ready" in d.detail and "manual intervention" in d.detail
    still = settle(History((stuck,)), [P1, pod(6, ready=False)], NOW)
    assert still.records[0].settled_at is None
    assert decide(history=still.records).reason is Blocked.IN_FLIGHT


def test_before_the_timeout_in_flight_only_waits() -> None:
    d = decide(history=(done(100, settled=False),))
    assert d.reason is Blocked.IN_FLIGHT and d.escalate == "" and d.until == NOW + 500


# -- 7: failures neither forget the budget nor recur silently ----------------------------

def failed_attempt(history: History, at: float, n: int = 2) -> History:
    """What the Remediator writes for one failed eviction: started, then its outcome."""
    started = Record(at, f"coredns-abc-{n}", f"uid-{n}", WORKLOAD, Mode.EVICT, Result.STARTED,
                     ready_before=2)
    history = history.add(started, at)
    return history.conclude(dataclasses.replace(started, result=Result.FAILED, settled_at=at,
                                                retry_at=at + 30, detail="500: etcd timeout"))


def test_many_failures_never_push_out_what_the_hourly_budget_counts() -> None:
    h = History(tuple(done(ago, pod_n=n, recovered=True)
                      for n, ago in enumerate((3000, 2900, 2800))))
    for i in range(200):  # failures every 10 s, alternating pods: nothing collapses
        other = Record(NOW - 2700 + i * 10, f"other-{i % 2}", f"o-{i % 2}", "Deployment/other",
                       Mode.EVICT, Result.FAILED, settled_at=NOW - 2700 + i * 10)
        h = h.add(other, other.at)
    assert len(h.records) == 100
    assert sum(1 for r in h.records if r.result is Result.DONE) == 3
    assert decide(history=h.records).reason is Blocked.HOURLY_BUDGET


def test_an_unrecovered_restart_is_kept_however_old_while_give_up_counts_it() -> None:
    h = History((done(90_000), done(80_000)))
    for i in range(150):
        h = h.add(done(1000 - i, result=Result.PDB_BLOCKED, pod_n=i), NOW)
    assert [r.at for r in h.records[:2]] == [NOW - 90_000, NOW - 80_000]
    assert len(h.records) == 100


def test_identical_failures_in_a_row_collapse_into_one_record_with_a_count() -> None:
    h = History()
    for i in range(4):
        h = failed_attempt(h, NOW + 30 * i)
    assert len(h.records) == 1
    record = h.records[0]
    assert (record.result, record.count, record.at, record.last_at) == (
        Result.FAILED, 4, NOW, NOW + 90)
    assert record.retry_at == NOW + 120
    assert History.from_json(h.to_json()).records[0].count == 4
    h = failed_attempt(h, NOW + 120, n=3)  # another pod: a record of its own
    assert [r.count for r in h.records] == [4, 1]


def test_repeated_failures_escalate_and_recovery_lifts_it() -> None:
    h = History()
    for i in range(FAILURES_BEFORE_ESCALATION - 1):
        h = failed_attempt(h, NOW - 1000 + 30 * i)
    assert decide(history=h.records).verdict is Verdict.ACT
    h = failed_attempt(h, NOW - 500)
    d = decide(history=h.records)
    assert (d.reason, d.escalate) == (Blocked.GAVE_UP, WORKLOAD)
    assert f"{FAILURES_BEFORE_ESCALATION} attempts in a row" in d.detail
    assert "500: etcd timeout" in d.detail
    well = {t.key: Health(t, HealthState.HEALTHY) for t in (P1, P2)}
    recovered = recover(h.escalate(WORKLOAD, dry_run=False), well, NOW)
    assert recovered.escalated == ()
    assert decide(history=recovered.records).verdict is Verdict.ACT


def test_a_success_resets_the_failures_in_a_row() -> None:
    h = History()
    for i in range(FAILURES_BEFORE_ESCALATION - 1):
        h = failed_attempt(h, NOW - 5000 + 30 * i)
    h = h.add(done(4000), NOW - 4000)
    h = failed_attempt(h, NOW - 500)
    assert decide(history=h.records).verdict is Verdict.ACT


# -- issue 15/1: a pod verdict is confirmed before it is acted on ---------------------------

CONFIRMING = Rails(confirm=10.0)


def rounds_of(*verdicts: tuple[float, Diagnosis]) -> dict[str, float]:
    """``candidacy`` carried through rounds, each (seconds after NOW, diagnosis)."""
    since: dict[str, float] = {}
    for at, diagnosis in verdicts:
        since = candidacy(since, diagnosis, NOW + at)
    return since


def decide_at(at: float, since: dict[str, float], sick: Target = P2) -> Decision:
    return RemediationPolicy(CONFIRMING).decide(
        pod_problem(sick), healths([sick], [P1, P3]), [P1, sick, P3], History(), NOW + at,
        since)


def test_a_pod_verdict_is_held_for_the_confirmation_period_then_acted_on() -> None:
    since = rounds_of(*((t, pod_problem(P2)) for t in range(0, 11)))
    early = decide_at(9.5, since)
    assert (early.verdict, early.reason, early.pod) == (Verdict.BLOCKED, Blocked.CONFIRMING,
                                                       P2.name)
    assert early.until == NOW + 10.0
    assert decide_at(10.0, since).verdict is Verdict.ACT


def test_a_pod_never_seen_as_a_candidate_before_is_not_acted_on_at_once() -> None:
    assert decide_at(0.0, {}).reason is Blocked.CONFIRMING
    assert decide_at(100.0, {}).reason is Blocked.CONFIRMING  # "since" unknown: just now


def test_a_second_pod_turning_sick_meanwhile_starts_the_period_afresh() -> None:
    widespread = Diagnosis(DiagnosisState.WIDESPREAD, "two of three sick", (P2, P3))
    since = rounds_of((0, pod_problem(P2)), (5, widespread), (6, pod_problem(P2)))
    assert decide_at(10.0, since).reason is Blocked.CONFIRMING  # it was widespread at 5
    assert decide_at(15.9, since).reason is Blocked.CONFIRMING
    assert decide_at(16.0, since).verdict is Verdict.ACT


def test_a_candidate_that_stopped_being_one_starts_afresh() -> None:
    since = rounds_of((0, pod_problem(P2)), (3, pod_problem(P3)), (4, pod_problem(P2)))
    assert since == {"uid-2": NOW + 4}
    assert decide_at(13.0, since).reason is Blocked.CONFIRMING


def test_without_a_confirmation_period_the_first_verdict_acts() -> None:
    d = RemediationPolicy(Rails(confirm=0.0)).decide(
        pod_problem(P2), healths([P2], [P1]), [P1, P2], History(), NOW, {})
    assert d.verdict is Verdict.ACT


# -- issue 15/2 and 15/7: the fresh read before a restart -----------------------------------

SELECTOR = {"k8s-app": "kube-dns"}


def fresh(**change: Any) -> PodNow:
    """P2 as the API shows it when all is well; ``change`` makes it otherwise."""
    base = PodNow(exists=True, uid="uid-2", labels={**SELECTOR, "pod-template-hash": "abc"},
                  workload=WORKLOAD, selector=SELECTOR, endpoint=True)
    return dataclasses.replace(base, **change)


@pytest.mark.parametrize(("change", "reason", "words"), [
    ({"exists": False}, Blocked.POD_GONE, "no longer exists"),
    ({"uid": "uid-99"}, Blocked.POD_GONE, "another pod"),
    ({"terminating": True}, Blocked.POD_TERMINATING, "terminating"),
    ({"labels": {"component": "etcd"}}, Blocked.NOT_OURS, "not selected"),
    ({"selector": {}}, Blocked.NOT_OURS, "not selected"),
    ({"workload": ""}, Blocked.NOT_OURS, "controlled by nothing"),
    ({"workload": "Node/master-1"}, Blocked.NOT_OURS, "Node/master-1"),
    ({"workload": "Deployment/other"}, Blocked.NOT_OURS, "Deployment/other"),
    ({"endpoint": False}, Blocked.NOT_AN_ENDPOINT, "no longer an endpoint"),
])
def test_a_pod_read_fresh_is_restarted_only_when_it_is_still_the_pod_judged(
        change: dict[str, Any], reason: Blocked, words: str) -> None:
    assert refusal(P2, fresh()) is None
    refused = refusal(P2, fresh(**change))
    assert refused is not None and refused[0] is reason and words in refused[1], refused


def test_an_endpoint_that_names_no_pod_is_never_restarted() -> None:
    no_ref = dataclasses.replace(P2, pod=dataclasses.replace(P2.pod, name="10.244.0.2",
                                                               uid="", workload=""))
    refused = refusal(no_ref, fresh())
    assert refused is not None and refused[0] is Blocked.NOT_OURS
    assert "no targetRef" in refused[1]


# -- issue 15/3: a replacement that relapses within the settle period did not recover -------

def flapping(settle_period: float, restarts: int = 3, on: float = 8.0,
             off: float = 4.0) -> tuple[History, float]:
    """A pod slot that is sick ``on`` seconds and well ``off`` seconds, replacements too:
    each restart is followed by a healthy spell, then the slot turns sick again."""
    h, t = History(), NOW
    for n in range(restarts):
        h = h.add(Record(t, f"coredns-abc-{n}", f"uid-{n}", WORKLOAD, Mode.EVICT, Result.DONE,
                         ready_before=3, settled_at=t + 2), t)
        t += off
        h = recover(h, healths([], [P1, P2, P3]), t, settle_period)  # looks recovered
        t += on
        h = recover(h, healths([P2], [P1, P3]), t, settle_period)  # and relapses
    return h, t


def test_a_flapping_slot_gives_up_after_the_configured_restarts() -> None:
    rails = Rails(give_up_after=3, settle_period=300.0, cooldown=0.0, max_per_hour=100)
    h, t = flapping(rails.settle_period)
    assert all(r.recovered_at is None for r in h.records)
    d = RemediationPolicy(rails).decide(pod_problem(P2), healths([P2], [P1, P3]),
                                        [P1, P2, P3], h, t)
    assert (d.verdict, d.reason, d.escalate) == (Verdict.BLOCKED, Blocked.GAVE_UP, WORKLOAD)
    assert "3 remediations" in d.detail


def test_without_a_settle_period_each_healthy_spell_reset_the_count() -> None:
    """What the settle period closes: every off phase looked like recovery."""
    rails = Rails(give_up_after=3, settle_period=0.0, cooldown=0.0, max_per_hour=100)
    h, t = flapping(0.0)
    d = RemediationPolicy(rails).decide(pod_problem(P2), healths([P2], [P1, P3]),
                                        [P1, P2, P3], h, t)
    assert d.verdict is Verdict.ACT


def test_health_held_for_the_settle_period_is_a_recovery_a_later_fault_does_not_undo() -> None:
    h = History((done(400, settled=True),))
    h = recover(h, healths([], [P1, P2]), NOW - 390, 300.0)
    assert h.records[0].recovered_at == NOW - 390
    h = recover(h, healths([P2], [P1]), NOW, 300.0)  # 390 s later: a new fault
    assert h.records[0].recovered_at == NOW - 390


def test_an_escalation_is_lifted_only_once_health_has_held_for_the_settle_period() -> None:
    h = History((done(400, settled=True),), escalated=(WORKLOAD,))
    h = recover(h, healths([], [P1, P2]), NOW, 300.0)
    assert h.escalated == (WORKLOAD,)  # healthy for a moment only
    h = recover(h, healths([], [P1, P2]), NOW + 299, 300.0)
    assert h.escalated == (WORKLOAD,)
    h = recover(h, healths([], [P1, P2]), NOW + 300, 300.0)
    assert h.escalated == ()
