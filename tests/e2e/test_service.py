"""The service against real DNS servers in network namespaces, faults injected.

Each test breaks something in the sandbox cluster and checks what a user
would see: which target turns unhealthy, the diagnosis, and the pods the
service would restart (none when the cause is shared).
"""

from __future__ import annotations

import pytest

from corednsprobe.model import DiagnosisState, HealthState
from tests.e2e.conftest import Start, health_of, pods_judged

pytestmark = pytest.mark.root


async def test_one_pod_with_udp_dropped_is_the_only_candidate(start: Start) -> None:
    c = await start(replicas=3)
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.HEALTHY
                  and pods_judged(s) == 3, within=20)
    sick = c.pod_names()[0]
    await c.sandbox.set_pod_fault(sick, "drop")
    s = c.service.settings
    took = await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.POD, within=30)
    assert took <= s.window + s.interval + 1.0, f"diagnosis took {took:.1f} s"
    d = c.service.state.diagnosis
    assert [t.name for t in d.candidates] == [sick]
    h = health_of(c.service, sick)
    assert h.state is HealthState.UNHEALTHY
    assert h.udp_only > 0  # TCP still answered: the exact UDP-only failure
    for other in c.pod_names()[1:]:
        assert health_of(c.service, other).state is HealthState.HEALTHY


async def test_every_pod_broken_is_widespread_and_restarts_none(start: Start) -> None:
    c = await start(replicas=3)
    await c.sandbox.set_all_pods_fault("drop")
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.WIDESPREAD, within=30)
    candidates_seen: list[int] = []
    c.round_hooks.append(lambda s: candidates_seen.append(len(s.state.diagnosis.candidates)))
    rounds = len(c.rounds)
    await c.until(lambda _s: len(c.rounds) >= rounds + 4, within=20)
    assert c.service.state.diagnosis.state is DiagnosisState.WIDESPREAD
    assert set(candidates_seen) == {0}


async def test_broken_service_path_restarts_none(start: Start) -> None:
    c = await start(replicas=3)
    await c.until(lambda s: pods_judged(s) == 3, within=20)
    await c.sandbox.set_service_broken(True)
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.SERVICE_PATH, within=30)
    d = c.service.state.diagnosis
    assert d.candidates == ()
    assert all(health_of(c.service, n).state is HealthState.HEALTHY for n in c.pod_names())
    await c.sandbox.set_service_broken(False)
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.HEALTHY, within=30)


async def test_thirty_percent_loss_on_one_pod_stays_healthy(start: Start) -> None:
    # Default failure ratio (0.5) and minimum samples; a window holding ~80 outcomes.
    c = await start(replicas=3, COREDNSPROBE_INTERVAL="0.25", COREDNSPROBE_TIMEOUT="0.1",
                    COREDNSPROBE_WINDOW="10")
    lossy = c.pod_names()[0]
    await c.sandbox.set_pod_fault(lossy, "loss:30")
    states: list[HealthState] = []
    c.round_hooks.append(lambda s: states.append(health_of(s, lossy).state))
    await c.until(lambda s: health_of(s, lossy).samples >= 40, within=30)
    rounds = len(c.rounds)
    await c.until(lambda _s: len(c.rounds) >= rounds + 20, within=30)
    h = health_of(c.service, lossy)
    assert 0.1 < h.ratio < 0.5, h  # the loss is seen, and judged tolerable
    assert HealthState.UNHEALTHY not in states
    assert c.service.state.diagnosis.candidates == ()


@pytest.mark.parametrize("backend", ["inprocess", "netns"])
async def test_a_pod_answering_a_wrong_address_every_time_is_the_candidate(
        start: Start, backend: str) -> None:
    # the NXDOMAIN canary still passes on that pod: half of its outcomes are ok
    c = await start(replicas=3, backend=backend)
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.HEALTHY
                  and pods_judged(s) == 3, within=20)
    sick = c.pod_names()[0]
    await c.sandbox.set_pod_fault(sick, "wrong-answer")
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.POD, within=30)
    assert [t.name for t in c.service.state.diagnosis.candidates] == [sick]
    h = health_of(c.service, sick)
    assert h.state is HealthState.UNHEALTHY
    assert dict(h.outcomes).get("wrong_answer", 0) > 0 and dict(h.outcomes).get("ok", 0) > 0
    for other in c.pod_names()[1:]:
        assert health_of(c.service, other).state is HealthState.HEALTHY
