"""Attribution through a shared front door: the arithmetic of naming a pod by its
absence, and the bound that keeps a healthy pod from being named by chance."""

from __future__ import annotations

import random

import pytest

from corednsprobe.judge.attribution import (
    MISS_BOUND,
    Attribution,
    Sighting,
    absence,
    answers_needed,
    miss_probability,
)
from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.judge.tracker import Thresholds
from corednsprobe.model import (
    ClusterState,
    DiagnosisState,
    HealthState,
    PodRef,
    Target,
    TargetKind,
    TargetSet,
)

THRESHOLDS = Thresholds(window=60.0, min_pod_age=0.0)


def pod(name: str, node: str = "node-1", ready: bool = True) -> Target:
    return Target(TargetKind.POD, f"10.0.0.{hash(name) % 200 + 2}", 53,
                  PodRef(name, uid=f"uid-{name}", node=node, ready=ready))


def sighting(at: float, reachable: tuple[str, ...], nsid: str = "", outcome: str = "ok",
             check: str = "kubernetes") -> Sighting:
    return Sighting(at, reachable, nsid, outcome, check, udp_only=outcome == "timeout")


def test_the_chance_of_missing_a_healthy_pod_is_the_product_of_its_shares() -> None:
    assert miss_probability([2] * 20) == pytest.approx(0.5 ** 20)
    assert miss_probability([3, 3, 2]) == pytest.approx((2 / 3) ** 2 * 0.5)
    assert miss_probability([1, 3]) == 0.0  # an address with one pod behind it names it
    assert miss_probability([]) == 1.0


def test_answers_needed_at_the_bound() -> None:
    assert (answers_needed(2), answers_needed(3), answers_needed(10)) == (20, 35, 132)
    for n in (2, 3, 5, 10):
        k = answers_needed(n)
        assert miss_probability([n] * k) <= MISS_BOUND < miss_probability([n] * (k - 1))


def run_dead_pod(n: int, answers: int) -> bool:
    """Pod p0 of n dead: ``answers`` answers from the others, and p0's share unanswered."""
    names = tuple(f"p{i}" for i in range(n))
    seen: list[Sighting] = []
    for i in range(answers):
        seen.append(sighting(float(i), names, nsid=names[1 + i % (n - 1)]))
    seen += [sighting(1000.0 + i, names, outcome="timeout") for i in range(answers // (n - 1))]
    return absence(seen, "p0").absent


@pytest.mark.parametrize("n", [2, 3])
def test_a_dead_pod_is_named_exactly_when_the_answers_reach_the_bound(n: int) -> None:
    k = answers_needed(n)
    assert run_dead_pod(n, k)
    assert not run_dead_pod(n, k - 1)


def test_the_evidence_gives_the_numbers() -> None:
    names = ("a", "b")
    seen = [sighting(float(i), names, nsid="b") for i in range(20)]
    seen += [sighting(100.0 + i, names, outcome="timeout") for i in range(18)]
    gone = absence(seen, "a")
    assert gone.absent and (gone.answers, gone.unanswered, gone.probes) == (20, 18, 38)
    assert gone.describe() == (
        "named in 0 of 20 answers from 2 pods: P(healthy and unseen) = (1/2)^20 = 9.5e-07 "
        "<= 1e-06; 18 of 38 probes unanswered (its share 0.50)")


def test_an_answer_without_nsid_could_be_the_pod_so_it_is_not_named() -> None:
    names = ("a", "b")
    seen = [sighting(float(i), names, nsid="b") for i in range(40)]
    seen += [sighting(50.0, names)] + [sighting(60.0 + i, names, "", "timeout") for i in range(40)]
    gone = absence(seen, "a")
    assert gone.anonymous == 1 and not gone.absent


def test_a_pod_routed_late_while_every_probe_is_answered_is_not_named() -> None:
    names = ("a", "b", "new")
    seen = [sighting(float(i), names, nsid=("a", "b")[i % 2]) for i in range(200)]
    gone = absence(seen, "new")
    assert gone.miss < 1e-30 and gone.unanswered == 0 and not gone.absent


def test_the_path_must_fail_at_about_the_pods_share() -> None:
    names = ("a", "b", "c")
    seen = [sighting(float(i), names, nsid=("b", "c")[i % 2]) for i in range(200)]
    seen.append(sighting(300.0, names, outcome="timeout"))  # 1 of 201: far below 1/3
    assert not absence(seen, "a").absent
    seen += [sighting(400.0 + i, names, outcome="timeout") for i in range(80)]
    assert absence(seen, "a").absent


@pytest.mark.parametrize(("n", "loss"), [(2, 0.0), (2, 0.3), (3, 0.1), (3, 0.5)])
def test_a_healthy_pod_is_named_by_chance_no_more_often_than_the_bound(n: int,
                                                                       loss: float) -> None:
    """Uniform routing, lossy path, every pod healthy: over 4,000 windows of 60 probes
    judged at a loose bound of 1%, a given pod is named absent in at most about 1% of
    them; at the real bound (1e-6) in none."""
    rng = random.Random(n * 1000 + int(loss * 100))
    names = tuple(f"p{i}" for i in range(n))
    loose = strict = 0
    windows = 4000
    for _ in range(windows):
        seen = []
        for i in range(60):
            lost = rng.random() < loss
            seen.append(sighting(float(i), names, "" if lost else rng.choice(names),
                                 "timeout" if lost else "ok"))
        tail = [s for s in seen if s.at > max((s.at for s in seen if s.nsid == "p0"),
                                               default=-1.0)]
        loose += absence(tail, "p0", bound=0.01).absent
        strict += absence(tail, "p0").absent
    assert loose <= 0.01 * windows * 1.5
    assert strict == 0


def test_attribution_names_the_dead_pod_and_vouches_for_the_other() -> None:
    a, b = pod("coredns-a"), pod("coredns-b")
    names = ("coredns-a", "coredns-b")
    attribution = Attribution(THRESHOLDS)
    attribution.evaluate([a, b], now=0.0)  # both eligible from 0
    for i in range(10):
        attribution.record(sighting(1.0 + i, names, nsid=names[i % 2]))
    healths = attribution.evaluate([a, b], now=20.0)
    assert {h.state for h in healths.values()} == {HealthState.HEALTHY}
    for i in range(24):  # a dies: b answers, a's share times out
        attribution.record(sighting(21.0 + i, names, nsid="coredns-b"))
        attribution.record(sighting(21.5 + i, names, outcome="timeout"))
    healths = attribution.evaluate([a, b], now=50.0)
    sick, well = healths[a.key], healths[b.key]
    assert sick.state is HealthState.UNHEALTHY and well.state is HealthState.HEALTHY
    assert (sick.samples, sick.failures, sick.udp_only) == (24, 24, 24)
    # b answered at 10, after a last did at 9
    assert sick.attribution.startswith("named in 0 of 25 answers from 2 pods")
    verdict = diagnose(TargetSet(pods=(a, b), state=ClusterState.OK), healths, Policy())
    assert verdict.state is DiagnosisState.POD and verdict.candidates == (a,)
    assert "(1/2)^25" in verdict.evidence_of("coredns-a")


def test_a_pod_that_answers_wrong_under_its_own_name_is_judged_directly() -> None:
    a, b = pod("coredns-a"), pod("coredns-b")
    names = ("coredns-a", "coredns-b")
    attribution = Attribution(THRESHOLDS)
    attribution.evaluate([a, b], now=0.0)
    for i in range(12):
        attribution.record(sighting(1.0 + i, names, nsid="coredns-a", outcome="servfail"))
        attribution.record(sighting(1.5 + i, names, nsid="coredns-b"))
    healths = attribution.evaluate([a, b], now=20.0)
    assert healths[a.key].state is HealthState.UNHEALTHY
    assert healths[a.key].outcomes == (("servfail", 12),)
    assert healths[b.key].state is HealthState.HEALTHY


def test_one_pod_behind_a_local_node_address_is_judged_without_nsid() -> None:
    a, b = pod("coredns-a", "node-1"), pod("coredns-b", "node-2")
    attribution = Attribution(THRESHOLDS)
    attribution.evaluate([a, b], now=0.0)
    for i in range(6):
        attribution.record(sighting(1.0 + i, ("coredns-a",), outcome="timeout"))
        attribution.record(sighting(1.5 + i, ("coredns-b",)))
    healths = attribution.evaluate([a, b], now=10.0)
    assert healths[a.key].state is HealthState.UNHEALTHY
    assert healths[a.key].outcomes == (("timeout", 6),)
    assert healths[b.key].state is HealthState.HEALTHY


def test_without_names_nothing_is_judged() -> None:
    a, b = pod("coredns-a"), pod("coredns-b")
    names = ("coredns-a", "coredns-b")
    attribution = Attribution(THRESHOLDS)
    attribution.evaluate([a, b], now=0.0)
    for i in range(40):
        attribution.record(sighting(1.0 + i, names, outcome=("ok", "timeout")[i % 2]))
    healths = attribution.evaluate([a, b], now=50.0)
    assert {h.state for h in healths.values()} == {HealthState.UNKNOWN}


def test_sightings_before_a_pod_became_eligible_do_not_count() -> None:
    a, b = pod("coredns-a"), pod("coredns-b")
    names = ("coredns-a", "coredns-b")
    attribution = Attribution(THRESHOLDS)
    attribution.evaluate([b], now=0.0)
    for i in range(30):  # a not yet routed: b answers, and the path fails now and then
        attribution.record(sighting(1.0 + i, names, nsid="coredns-b"))
        attribution.record(sighting(1.5 + i, names, outcome="timeout"))
    healths = attribution.evaluate([a, b], now=40.0)
    assert healths[a.key].state is HealthState.UNKNOWN


def test_a_pod_in_grace_is_never_judged() -> None:
    a = pod("coredns-a", ready=False)
    attribution = Attribution(THRESHOLDS)
    healths = attribution.evaluate([a], now=0.0)
    assert healths[a.key].state is HealthState.GRACE
    assert healths[a.key].grace_reason == "not_ready"
