"""Agent pods as vantages (service/vantages.py): the first agent's results are the
service's own healths, each other agent's results a tracker per node, all combined by
judge/vantage.py's rule: quorum before restart, ``path``, stale views dropped."""

from __future__ import annotations

from typing import Any

from corednsprobe.config import Settings
from corednsprobe.judge.diagnose import Policy
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    DiagnosisState,
    Health,
    HealthState,
    Outcome,
    ProbeResult,
)
from corednsprobe.service.vantages import Vantages
from tests.unit.helpers import SERVICE, pod, result, targetset

PODS = [pod(1), pod(2), pod(3)]
TS = targetset(*PODS)
NOW = 1_000_000.0


class Agents:
    """Three agent pods, one per node, as reach.probepod reports them."""

    def __init__(self, nodes: tuple[str, ...] = ("node-a", "node-b", "node-c")) -> None:
        self.listed = [(f"agent-{n}", n, i == 0) for i, n in enumerate(nodes)]
        self.fed: list[tuple[str, str, ProbeResult]] = []

    def agents(self) -> list[tuple[str, str, bool]]:
        return self.listed

    def drain(self) -> list[tuple[str, str, ProbeResult]]:
        out, self.fed = self.fed, []
        return out

    def feed(self, node: str, sick: set[int], at: float) -> None:
        for i, p in enumerate(PODS):
            for k in range(12):
                outcome = Outcome.TIMEOUT if i + 1 in sick else Outcome.OK
                self.fed.append((f"agent-{node}", node, result(p, outcome, at - k * 0.3)))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def make(source: Agents | None, clock: Clock) -> Vantages:
    settings = Settings.from_env({"COREDNSPROBE_INTERVAL": "1", "COREDNSPROBE_WINDOW": "10",
                                  "COREDNSPROBE_MIN_POD_AGE": "0"})
    v = Vantages(settings, None, pod="outside", node="", leading=lambda: True,
                 metrics=Metrics(1.0), wall=clock)
    v.agent_source = lambda: source
    return v


def own(sick: set[int]) -> dict[Any, Health]:
    out = {p.key: Health(p, HealthState.UNHEALTHY if i + 1 in sick else HealthState.HEALTHY,
                         samples=20, failures=20 if i + 1 in sick else 0)
           for i, p in enumerate(PODS)}
    out[SERVICE.key] = Health(SERVICE, HealthState.HEALTHY, samples=20)
    return out


def test_a_pod_sick_only_from_the_first_agents_node_is_a_path_not_a_candidate() -> None:
    clock, agents = Clock(), Agents()
    v = make(agents, clock)
    agents.feed("node-b", set(), NOW)
    agents.feed("node-c", set(), NOW)
    d, _ = v.merge(TS, own({1}), Policy())
    assert d.state is DiagnosisState.PATH and d.candidates == ()
    assert "vantages=3" in d.reason and "from node-a to node-1" in d.reason
    doc = v.status()
    assert doc["vantages"] == 3 and doc["agent_pods"] is True
    assert [(r["pod"], r["own"]) for r in doc["views"]] == [
        ("agent-node-a", True), ("agent-node-b", False), ("agent-node-c", False)]


def test_a_pod_sick_from_every_agent_is_a_candidate_agreed_by_their_nodes() -> None:
    clock, agents = Clock(), Agents()
    v = make(agents, clock)
    agents.feed("node-b", {1}, NOW)
    agents.feed("node-c", {1}, NOW)
    d, _ = v.merge(TS, own({1}), Policy())
    assert d.state is DiagnosisState.POD
    assert [t.name for t in d.candidates] == ["coredns-1"]
    assert "unhealthy from node-a,node-b,node-c" in d.reason


def test_a_silent_agents_view_goes_stale_and_the_quorum_is_taken_on_the_rest() -> None:
    clock, agents = Clock(), Agents()
    v = make(agents, clock)
    agents.feed("node-b", set(), NOW)
    agents.feed("node-c", {1}, NOW)
    d, _ = v.merge(TS, own({1}), Policy())
    assert d.state is DiagnosisState.POD  # node-a and node-c agree: the quorum of 2
    clock.now = NOW + 30  # node-b's and node-c's agents say nothing more
    d, _ = v.merge(TS, own({1}), Policy())
    assert "vantages=1" in d.reason
    assert [r["state"] for r in v.status()["views"]] == ["counted", "stale", "stale"]


def test_one_agent_is_one_vantage_as_before() -> None:
    clock, agents = Clock(), Agents(("node-a",))
    v = make(agents, clock)
    d, _ = v.merge(TS, own({1}), Policy())
    assert d.state is DiagnosisState.POD and "vantages=1" in d.reason
    assert v.status()["agent_pods"] is False
    assert v.status()["views"][0]["pod"] == "outside"
