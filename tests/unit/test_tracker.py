"""Tracker: window edges, minimum samples, hysteresis, grace, forgetting."""

from __future__ import annotations

import random

import pytest

from corednsprobe.judge.tracker import Thresholds, Tracker
from corednsprobe.model import Check, HealthState, Outcome
from corednsprobe.stats import failure_lower_bound
from tests.unit.helpers import CHECK, UPSTREAM, pod, result

OK, TO = Outcome.OK, Outcome.TIMEOUT
P = pod(1)


def feed(tracker: Tracker, outcomes: list[Outcome], start: float = 0.0, step: float = 5.0) -> float:
    t = start
    for o in outcomes:
        tracker.record(result(P, o, t), t)
        t += step
    return t - step


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([TO] * 4, HealthState.UNKNOWN),  # below min_samples: no verdict
        ([TO] * 5, HealthState.UNHEALTHY),  # a dead target: caught at min_samples
        ([OK, OK, OK, TO, TO], HealthState.HEALTHY),
        ([OK, TO, TO, TO, TO], HealthState.HEALTHY),  # 4 of 5 is not yet sure enough
        ([OK, OK, OK, *[TO] * 9], HealthState.UNHEALTHY),  # 9 of 12
        ([OK] * 4 + [TO] * 8, HealthState.HEALTHY),  # 8 of 12
        ([OK] * 7 + [TO] * 17, HealthState.UNHEALTHY),  # 17 of 24
        ([OK, TO] * 12, HealthState.HEALTHY),  # a steady 50 % is not proof of >= 50 %
        ([OK] * 5, HealthState.HEALTHY),
    ],
)
def test_ratio_and_min_samples(outcomes: list[Outcome], expected: HealthState) -> None:
    tr = Tracker(Thresholds())
    now = feed(tr, outcomes)
    assert tr.evaluate([P], now)[P.key].state is expected


def test_lower_bound_separates_loss_from_death() -> None:
    assert failure_lower_bound(5, 5) > 0.5  # dead: five timeouts in a row
    assert failure_lower_bound(12, 24) < 0.5  # half failing: not sure it is >= 50 %
    assert failure_lower_bound(7, 24) < 0.2  # 30 % loss
    assert failure_lower_bound(0, 0) == 0.0
    assert failure_lower_bound(0, 10) == 0.0


def test_failure_ratio_is_tunable() -> None:
    tr = Tracker(Thresholds(failure_ratio=0.2))
    now = feed(tr, [OK, TO] * 12)  # 50 % failing: surely above 20 %
    assert tr.evaluate([P], now)[P.key].state is HealthState.UNHEALTHY


def test_window_is_time_bounded() -> None:
    tr = Tracker(Thresholds(window=60, min_samples=5))
    last = feed(tr, [TO] * 5, start=0, step=1)  # failures at t=0..4
    assert tr.evaluate([P], last)[P.key].state is HealthState.UNHEALTHY
    tr2 = Tracker(Thresholds(window=60, min_samples=5))
    feed(tr2, [TO] * 5, start=0, step=1)
    feed(tr2, [OK] * 5, start=61, step=1)  # the failures have left the window
    health = tr2.evaluate([P], 65)[P.key]
    assert (health.samples, health.failures) == (5, 0)
    assert health.state is HealthState.HEALTHY


def test_sample_exactly_window_old_is_gone() -> None:
    tr = Tracker(Thresholds(window=10, min_samples=1))
    tr.record(result(P, TO, 0.0), 0.0)
    assert tr.evaluate([P], 9.999)[P.key].samples == 1
    assert tr.evaluate([P], 10.0)[P.key].samples == 0


def test_recovery_needs_consecutive_successes_then_starts_fresh() -> None:
    tr = Tracker(Thresholds(recovery_successes=3))
    t = feed(tr, [TO] * 6)
    assert tr.evaluate([P], t)[P.key].state is HealthState.UNHEALTHY
    t = feed(tr, [OK, OK, TO, OK, OK], start=t + 5)  # streak broken: still unhealthy
    assert tr.evaluate([P], t)[P.key].state is HealthState.UNHEALTHY
    t = feed(tr, [OK], start=t + 5)  # three in a row now
    health = tr.evaluate([P], t)[P.key]
    assert health.state is HealthState.HEALTHY
    assert health.samples == 0  # the old failures cannot flip it back at once
    t = feed(tr, [TO], start=t + 5)
    assert tr.evaluate([P], t)[P.key].state is HealthState.HEALTHY


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (pod(2, terminating=True, ready=False), "terminating"),
        (pod(3, ready=False), "not_ready"),
        (pod(4, created=90.0), "too_young"),
    ],
)
def test_grace_pods_are_never_judged(target: object, reason: str) -> None:
    from corednsprobe.model import Target

    assert isinstance(target, Target)
    tr = Tracker(Thresholds(min_pod_age=30))
    for i in range(10):
        tr.record(result(target, TO, 100.0 + i), 100.0 + i)
    health = tr.evaluate([target], 110.0)[target.key]
    assert health.state is HealthState.GRACE
    assert health.grace_reason == reason
    assert health.samples == 0


def test_pod_old_enough_leaves_grace_with_an_empty_window() -> None:
    young = pod(5, created=100.0)
    tr = Tracker(Thresholds(min_pod_age=30))
    for i in range(10):
        tr.record(result(young, TO, 100.0 + i), 100.0 + i)
    assert tr.evaluate([young], 131.0)[young.key].state is HealthState.UNKNOWN


def test_upstream_failures_do_not_make_a_pod_unhealthy() -> None:
    tr = Tracker(Thresholds())
    for i in range(6):
        tr.record(result(P, OK, i), i)
        tr.record(result(P, Outcome.SERVFAIL, i, check=UPSTREAM), i)
    health = tr.evaluate([P], 6)[P.key]
    assert health.state is HealthState.HEALTHY
    assert (health.upstream_samples, health.upstream_failures) == (6, 6)


def test_udp_only_and_outcomes_are_counted() -> None:
    tr = Tracker(Thresholds())
    for i in range(5):
        tr.record(result(P, TO, i, udp_only=True), i)
    tr.record(result(P, Outcome.SERVFAIL, 5), 5)
    health = tr.evaluate([P], 5)[P.key]
    assert health.udp_only == 5
    assert dict(health.outcomes) == {"timeout": 5, "servfail": 1}


def test_departed_targets_are_forgotten() -> None:
    tr = Tracker(Thresholds())
    feed(tr, [TO] * 6)
    assert tr.evaluate([], 30) == {}
    # back with the same identity: no memory of the old failures
    assert tr.evaluate([P], 31)[P.key].samples == 0


CANARY = Check("nxdomain", "canary.invalid.", "A", None, "NXDOMAIN")


def test_a_check_that_always_fails_is_not_diluted_by_one_that_passes() -> None:
    # a pod answering a wrong address for kubernetes.default.svc every time while
    # the NXDOMAIN canary passes: 50 % of its outcomes fail, but one check fails wholly
    tr = Tracker(Thresholds())
    for i in range(19):
        tr.record(result(P, Outcome.WRONG_ANSWER, i * 5.0), i * 5.0)
        tr.record(result(P, OK, i * 5.0, check=CANARY), i * 5.0)
    health = tr.evaluate([P], 90.0)[P.key]
    assert health.state is HealthState.UNHEALTHY
    assert dict(health.outcomes) == {"ok": 12, "wrong_answer": 12}
    assert [(c.check, c.samples, c.failures) for c in health.checks] == [
        ("cluster_ip", 12, 12), ("nxdomain", 12, 0)]


def test_a_wholly_failing_check_is_caught_after_six_rounds() -> None:
    tr = Tracker(Thresholds())
    states = []
    for i in range(7):
        tr.record(result(P, Outcome.WRONG_ANSWER, i * 5.0), i * 5.0)
        tr.record(result(P, OK, i * 5.0, check=CANARY), i * 5.0)
        states.append(tr.evaluate([P], i * 5.0)[P.key].state)
    assert states.index(HealthState.UNHEALTHY) == 5  # 6 of 6 at 99 %; 5 of 5 is not sure


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_thirty_percent_loss_on_every_check_is_never_unhealthy(seed: int) -> None:
    # defaults: 60 s window, a round every 5 s, two checks; 4000 rounds is 5.5 hours.
    # Judged per check at 95 % instead of 99 %, each seed here turns unhealthy.
    rng = random.Random(seed)
    tr = Tracker(Thresholds())
    unhealthy = 0
    for i in range(4000):
        now = i * 5.0
        for check in (CHECK, CANARY):
            tr.record(result(P, TO if rng.random() < 0.3 else OK, now, check=check), now)
        unhealthy += tr.evaluate([P], now)[P.key].state is HealthState.UNHEALTHY
    assert unhealthy == 0


@pytest.mark.parametrize("seed", range(5))
def test_a_judgement_handed_out_again_is_the_one_a_fresh_look_gives(seed: int) -> None:
    """The tracker hands out the last Health again while its window says the same; it
    must equal, field for field, what judging the window afresh says, every round."""
    rng = random.Random(seed)
    other = Check("nxdomain", "kube-system.svc.cluster.local.", "A", None, "NXDOMAIN")
    thresholds = Thresholds(window=30.0)
    cached, fresh = Tracker(thresholds), Tracker(thresholds)
    p2 = pod(2)
    reused = 0
    for r in range(200):
        now = float(r)
        sick = 60 <= r < 90 or 140 <= r < 150  # a dead spell, then a short one
        for t in (P, p2):
            for check in (CHECK, other, UPSTREAM):
                if rng.random() < 0.1:
                    continue  # a probe that did not come back this round: checks drift apart
                noisy = r < 40 or 100 <= r < 110  # random failures, then clean spells
                failed = (sick and t is P) or (noisy and rng.random() < 0.05)
                outcome = rng.choice((TO, Outcome.SERVFAIL)) if failed else OK
                if noisy and rng.random() < 0.03:
                    outcome = Outcome.TUNNEL  # the path, not the target: counted apart
                udp_only = outcome is TO and rng.random() < 0.3
                for tracker in (cached, fresh):
                    tracker.record(result(t, outcome, now, check=check, udp_only=udp_only), now)
            if t is p2 and 160 <= r < 163:  # a tunnel that failed beside clean samples
                for tracker in (cached, fresh):
                    tracker.record(result(t, Outcome.TUNNEL, now), now)
        before = {k: w.health for k, w in cached._windows.items()}
        for w in fresh._windows.values():
            w.health = None  # judged from the counts alone
        got, want = cached.evaluate([P, p2], now), fresh.evaluate([P, p2], now)
        assert got == want
        reused += sum(1 for k, h in got.items() if h is before.get(k))
    assert reused > 50  # the steady, all-ok rounds were handed out again


def test_a_failure_of_another_kind_in_place_of_one_that_expired_is_shown() -> None:
    """Same counts, other outcomes: the judgement shows what the window holds now."""
    tracker = Tracker(Thresholds(window=10.0))
    tracker.record(result(P, TO, 0.0), 0.0)
    for t in range(1, 10):
        tracker.record(result(P, OK, float(t)), float(t))
    first = tracker.evaluate([P], 9.5)[P.key]
    assert (first.state, dict(first.outcomes)) == (HealthState.HEALTHY, {"ok": 9, "timeout": 1})
    tracker.record(result(P, Outcome.SERVFAIL, 10.0), 10.0)
    second = tracker.evaluate([P], 10.5)[P.key]  # the timeout at 0 has left the window
    assert (second.samples, second.failures) == (first.samples, first.failures)
    assert dict(second.outcomes) == {"ok": 9, "servfail": 1}
