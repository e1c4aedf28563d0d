"""Vantages combined (judge/vantage.py): quorum, path, isolated vantages, stale views,
and the /vantage document read back without trusting it."""

from __future__ import annotations

import json

import pytest

from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.judge.vantage import (
    VantageView,
    combine,
    conclude,
    max_age,
    own_view,
    read_view,
)
from corednsprobe.model import (
    CheckWindow,
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    Target,
    TargetKey,
)
from tests.unit.helpers import SERVICE, pod, targetset

H, U, N = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN
PODS = [pod(1), pod(2), pod(3)]
NOW = 1_000_000.0
OLDEST = max_age(1.0, 1.0)


def healths(states: list[HealthState]) -> dict[TargetKey, Health]:
    out: dict[TargetKey, Health] = {}
    for p, s in zip(PODS, states, strict=True):
        sick = s is U
        out[p.key] = Health(p, s, samples=20, failures=20 if sick else 0,
                            outcomes=(("timeout", 20),) if sick else (("ok", 20),),
                            checks=(CheckWindow("cluster_ip", 10, 10 if sick else 0),
                                    CheckWindow("nxdomain", 10, 10 if sick else 0)))
    out[SERVICE.key] = Health(SERVICE, H, samples=20)
    return out


def view(node: str, states: list[HealthState], *, age: float = 0.0) -> VantageView:
    return own_view(f"probe-{node}", node, healths(states), NOW - age)


def judge(own: tuple[str, list[HealthState]], *peers: tuple[str, list[HealthState]],
          quorum: int = 2, ages: dict[str, float] | None = None) -> Diagnosis:
    mine = healths(own[1])
    ages = ages or {}
    c = combine(own_view(f"probe-{own[0]}", own[0], mine, NOW),
                [view(n, s, age=ages.get(n, 0.0)) for n, s in peers], mine,
                quorum=quorum, now=NOW, oldest=OLDEST)
    return conclude(diagnose(targetset(*PODS), c.healths, Policy()), c)


def names(targets: tuple[Target, ...]) -> list[str]:
    return [t.name for t in targets]


def test_one_vantage_behaves_as_before_and_says_vantages_1() -> None:
    d = judge(("node-a", [U, H, H]))
    assert d.state is DiagnosisState.POD and names(d.candidates) == ["coredns-1"]
    assert "vantages=1" in d.reason
    assert d.evidence is not None and d.evidence.as_dict()["vantages"] == "1"
    assert d.evidence_of("coredns-1").endswith("vantages=1 (node-a)")


def test_a_pod_sick_from_every_vantage_is_a_candidate_naming_the_agreeing_nodes() -> None:
    d = judge(("node-a", [U, H, H]), ("node-b", [U, H, H]), ("node-c", [U, H, H]))
    assert d.state is DiagnosisState.POD and names(d.candidates) == ["coredns-1"]
    assert "vantages=3 (node-a,node-b,node-c)" in d.evidence_of("coredns-1")


def test_a_pod_sick_from_one_node_only_is_a_path_with_no_candidate() -> None:
    d = judge(("node-a", [U, H, H]), ("node-b", [H, H, H]), ("node-c", [H, H, H]))
    assert d.state is DiagnosisState.PATH and d.candidates == ()
    assert d.evidence is not None
    [path] = d.evidence.paths
    assert (path.pod, path.pod_node, path.from_nodes, path.healthy_from) == (
        "coredns-1", "node-1", ("node-a",), ("node-b", "node-c"))
    assert "from node-a to node-1" in d.reason
    assert d.evidence.as_dict()["path/coredns-1"] == "from node-a to node-1 (healthy from " \
                                                     "node-b,node-c)"


def test_a_path_seen_by_a_follower_is_a_path_at_the_healthy_leader_too() -> None:
    d = judge(("node-a", [H, H, H]), ("node-b", [U, H, H]), ("node-c", [H, H, H]))
    assert d.state is DiagnosisState.PATH and d.candidates == ()


def test_the_quorum_counts_nodes_not_replicas() -> None:
    mine = healths([U, H, H])
    peers = [own_view("probe-2", "node-a", mine, NOW), view("node-b", [H, H, H])]
    c = combine(own_view("probe-1", "node-a", mine, NOW), peers, mine, quorum=2, now=NOW,
                oldest=OLDEST)
    d = conclude(diagnose(targetset(*PODS), c.healths, Policy()), c)
    assert d.state is DiagnosisState.PATH


def test_quorum_met_by_two_of_three_nodes_restarts_despite_one_healthy_view() -> None:
    d = judge(("node-a", [H, H, H]), ("node-b", [U, H, H]), ("node-c", [U, H, H]))
    assert d.state is DiagnosisState.POD and names(d.candidates) == ["coredns-1"]
    assert "vantages=2 (node-b,node-c)" in d.evidence_of("coredns-1")


def test_quorum_is_capped_at_the_nodes_holding_a_verdict() -> None:
    d = judge(("node-a", [U, H, H]), ("node-b", [N, H, H]), quorum=3)
    assert d.state is DiagnosisState.POD and names(d.candidates) == ["coredns-1"]


def test_a_quorum_of_three_needs_three_sick_nodes() -> None:
    d = judge(("node-a", [U, H, H]), ("node-b", [U, H, H]), ("node-c", [H, H, H]), quorum=3)
    assert d.state is DiagnosisState.PATH and d.candidates == ()


def test_an_isolated_vantage_is_set_aside() -> None:
    d = judge(("node-a", [H, H, H]), ("node-b", [H, H, H]), ("node-c", [U, U, U]))
    assert d.state is DiagnosisState.VANTAGE_ISOLATED and d.candidates == ()
    assert d.evidence is not None and d.evidence.isolated == ("node-c",)
    assert "vantages=2" in d.reason


def test_an_isolated_leader_sets_its_own_views_aside() -> None:
    d = judge(("node-c", [U, U, U]), ("node-a", [H, H, H]), ("node-b", [H, H, H]))
    assert d.state is DiagnosisState.VANTAGE_ISOLATED and d.candidates == ()


def test_every_vantage_seeing_every_pod_sick_is_widespread_not_isolated() -> None:
    d = judge(("node-a", [U, U, U]), ("node-b", [U, U, U]), ("node-c", [U, U, U]))
    assert d.state is DiagnosisState.WIDESPREAD and d.candidates == ()
    assert d.evidence is not None and d.evidence.isolated == ()


def test_a_stale_view_is_dropped_and_the_quorum_is_computed_on_the_rest() -> None:
    stale = OLDEST + 0.1
    d = judge(("node-a", [U, H, H]), ("node-b", [H, H, H]), ages={"node-b": stale})
    assert d.state is DiagnosisState.POD and "vantages=1" in d.reason
    d = judge(("node-a", [U, H, H]), ("node-b", [H, H, H]), ages={"node-b": OLDEST - 0.1})
    assert d.state is DiagnosisState.PATH


def test_a_peer_claiming_this_replicas_name_is_not_counted() -> None:
    mine = healths([U, H, H])
    c = combine(own_view("probe-a", "node-a", mine, NOW),
                [own_view("probe-a", "node-b", healths([H, H, H]), NOW)], mine, quorum=2,
                now=NOW, oldest=OLDEST)
    assert [v.node for v in c.vantages] == ["node-a"]


def test_the_document_round_trips_and_is_placed_on_the_readers_clock() -> None:
    v = view("node-b", [U, H, H])
    doc = json.loads(json.dumps(v.as_doc(NOW + 2.0)))
    back = read_view(doc, received=5_000.0)
    assert (back.pod, back.node, back.at) == ("probe-node-b", "node-b", 4_998.0)
    assert back.judgements == v.judgements


@pytest.mark.parametrize("doc", [
    None, [], {"version": 2}, {"version": 1, "pod": "p", "node": "n", "age": -1, "targets": []},
    {"version": 1, "pod": "", "node": "n", "age": 0, "targets": []},
    {"version": 1, "pod": "p", "node": "n", "age": 0, "targets": {}},
    {"version": 1, "pod": "p", "node": "n", "age": 0,
     "targets": [{"pod": "x", "uid": "u", "state": "sick"}]},
    {"version": 1, "pod": "p", "node": "n", "age": 0,
     "targets": [{"pod": "x", "uid": "u", "state": "healthy", "samples": -3}]},
    {"version": 1, "pod": "p", "node": "n", "age": float("nan"), "targets": []},
])
def test_a_malformed_document_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        read_view(doc, received=NOW)
