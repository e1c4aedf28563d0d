"""Leader election on the sandbox's Lease through the real client: one leader at a time,
hand-over on release and on a lapsed leader (which stops first), and the remediation
history that the next leader reads from the Lease."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from corednsprobe.kube.lease import LeaderElector, LeaseStore, LeaseTiming
from corednsprobe.metrics import Metrics
from corednsprobe.remedy.history import History, Result
from corednsprobe.remedy.policy import Blocked, Verdict
from corednsprobe.remedy.remediator import HISTORY_ANNOTATION, Remediator
from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.sandbox.registry import R
from tests.kube.conftest import api_client_for, eventually
from tests.kube.test_remediation import RAILS, Clock, live_pods, replaced, verdict, watching

NS = "kube-system"
LEASE = "corednsprobe"
FAST = LeaseTiming(lease_duration=2.0, renew_deadline=1.0, retry_period=0.25)
LEASES = R.require("coordination.k8s.io", "leases")
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Replica:
    """One prober replica's election side, with the loop times its leadership changed."""

    def __init__(self, api: client.ApiClient, name: str, timing: LeaseTiming = FAST) -> None:
        self.changes: list[tuple[bool, float]] = []
        self.elector = LeaderElector(api, NS, LEASE, identity=name, timing=timing,
                                     on_change=self._changed)
        self.store = LeaseStore(self.elector)
        self.task: asyncio.Task[None] | None = None

    def _changed(self, leading: bool) -> None:
        self.changes.append((leading, asyncio.get_running_loop().time()))

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(), name=self.elector.identity)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@contextlib.asynccontextmanager
async def replicas(sandbox: Sandbox, tmp_path: Path, *names: str,
                   timing: LeaseTiming = FAST) -> AsyncIterator[list[Replica]]:
    """A replica per name, each with its own token (so faults can hit one alone)."""
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for name in names:
            token = f"cdpr-{name}-token"
            sandbox.add_token(token, f"system:serviceaccount:kube-system:{name}",
                              [Rule.of(["*"], ["*"])])
            api = await api_client_for(sandbox, tmp_path / f"kc-{name}", token=token)
            await stack.enter_async_context(api)
            replica = Replica(api, name, timing)
            stack.push_async_callback(replica.stop)
            out.append(replica)
        yield out


def lease(sandbox: Sandbox) -> dict[str, object]:
    found = sandbox.store.get(LEASES, NS, LEASE)
    assert found is not None
    spec: dict[str, object] = found["spec"]
    return spec


async def test_two_electors_make_exactly_one_leader(sandbox: Sandbox, tmp_path: Path) -> None:
    async with replicas(sandbox, tmp_path, "alpha", "beta") as (a, b):
        a.start()
        b.start()
        await eventually(lambda: a.elector.is_leader() or b.elector.is_leader(), within=5)
        for _ in range(100):  # 2 s of renewals: never two at once
            assert not (a.elector.is_leader() and b.elector.is_leader())
            await asyncio.sleep(0.02)
        await eventually(lambda: a.elector.is_leader() or b.elector.is_leader(), within=5)
        leader = a if a.elector.is_leader() else b
        spec = lease(sandbox)
        assert spec["holderIdentity"] == leader.elector.identity
        assert spec["leaseDurationSeconds"] == 2
        assert MICRO.match(str(spec["renewTime"])) and MICRO.match(str(spec["acquireTime"]))
        assert spec["leaseTransitions"] == 0


async def test_release_hands_the_lease_over_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    async with replicas(sandbox, tmp_path, "alpha", "beta") as (a, b):
        a.start()
        await eventually(a.elector.is_leader, within=5)
        b.start()
        # b has read the Lease and found alpha holding it: only then does "not leader" mean
        # something
        await eventually(lambda: b.elector.holder == a.elector.identity, within=5)
        assert not b.elector.is_leader()
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await a.stop()
        await eventually(b.elector.is_leader, within=5)
        took = loop.time() - stopped
        print(f"\ntakeover after release: {took:.3f} s (retry period {FAST.retry_period} s)")
        assert took < FAST.lease_duration  # no need to wait the lease out
        spec = lease(sandbox)
        assert spec["holderIdentity"] == "beta" and spec["leaseTransitions"] == 1


async def test_release_after_a_write_it_did_not_see_still_hands_over(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A write cancelled in flight (or anyone's edit) moves the resourceVersion on; the
    release's 409 is answered by reading the Lease again, not by keeping it."""
    async with replicas(sandbox, tmp_path, "alpha") as (a,):
        a.start()
        await eventually(a.elector.is_leader, within=5)
        current = sandbox.store.must_get(LEASES, NS, LEASE)
        current["metadata"].setdefault("annotations", {})["touched-by"] = "someone"
        sandbox.registry.update(LEASES, NS, LEASE, current)
        await a.stop()
        assert not lease(sandbox).get("holderIdentity")
        annotations = sandbox.store.must_get(LEASES, NS, LEASE)["metadata"]["annotations"]
        assert annotations["touched-by"] == "someone"


async def test_a_leader_that_cannot_renew_stops_before_another_starts(
        sandbox: Sandbox, tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha", "beta") as (a, b), \
            watching(a.elector.leases.api_client) as view:
        a.start()
        await eventually(a.elector.is_leader, within=5)
        b.start()
        remediator = Remediator(a.elector.leases.api_client, NS, RAILS, leadership=a.elector,
                                store=a.store, metrics=Metrics(1.0), wall=clock)
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        cut = loop.time()
        for verb in ("get", "update", "create"):
            sandbox.deny("cdpr-alpha-token", verb, "leases", "coordination.k8s.io")
        await eventually(b.elector.is_leader, within=3 * FAST.lease_duration)
        took = loop.time() - cut
        a_stopped = next(t for leading, t in a.changes if not leading)
        b_started = next(t for leading, t in b.changes if leading)
        print(f"\nleader lapsed {a_stopped - cut:.3f} s after its API access was cut; "
              f"takeover {took:.3f} s after the cut (lease {FAST.lease_duration} s, "
              f"renew deadline {FAST.renew_deadline} s)")
        assert a_stopped < b_started  # never two leaders at once
        assert a_stopped - cut <= FAST.renew_deadline + 1.0  # generous for a loaded machine
        assert lease(sandbox)["holderIdentity"] == "beta"

        # the lapsed replica does not remediate
        victim = sorted(live_pods(sandbox))[0]
        decision = await remediator.step(*verdict(view, {victim}))
        assert (decision.verdict, decision.reason) == (Verdict.BLOCKED, Blocked.NOT_LEADER)
        assert victim in live_pods(sandbox) and remediator.history.records == ()


async def test_the_next_leader_reads_the_budget_the_first_one_recorded(
        sandbox: Sandbox, tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha", "beta") as (a, b), \
            watching(a.elector.leases.api_client) as view:
        first = Remediator(a.elector.leases.api_client, NS, RAILS, leadership=a.elector,
                           store=a.store, metrics=Metrics(1.0), wall=clock)
        second = Remediator(b.elector.leases.api_client, NS, RAILS, leadership=b.elector,
                            store=b.store, metrics=Metrics(1.0), wall=clock)
        a.start()
        await eventually(a.elector.is_leader, within=5)
        b.start()
        victim = sorted(live_pods(sandbox))[0]
        await first.step(*verdict(view, {victim}))
        assert first.history.records[-1].result is Result.DONE
        stored = History.from_json(
            sandbox.store.must_get(LEASES, NS, LEASE)["metadata"]["annotations"][
                HISTORY_ANNOTATION])
        assert stored.records[-1].pod == victim and stored.records[-1].result is Result.DONE

        # the follower mirrors it for /status (one retry period later), and may not act
        await eventually(lambda: '"result":"done"' in b.elector.annotations.get(
            HISTORY_ANNOTATION, ""), within=5)
        clock.now += 1
        follower = await second.step(*verdict(view, {victim}))
        assert follower.reason is Blocked.NOT_LEADER
        assert second.status()["budget"]["used_last_hour"] == 1

        await replaced(view, victim)
        await a.stop()
        await eventually(b.elector.is_leader, within=5)
        clock.now += 60
        other = sorted(live_pods(sandbox))[0]
        decision = await second.step(*verdict(view, {other}))
        assert (decision.verdict, decision.reason) == (Verdict.BLOCKED, Blocked.COOLDOWN)
        assert decision.until == first.history.records[-1].at + RAILS.cooldown
        assert other in live_pods(sandbox)


async def test_history_survives_a_crashed_remediator(sandbox: Sandbox, tmp_path: Path) -> None:
    """The first replica cannot even hand its Lease back; a fresh one waits it out, then
    holds the cooldown the first one started."""
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha") as (a,), \
            watching(a.elector.leases.api_client) as view:
        first = Remediator(a.elector.leases.api_client, NS, RAILS, leadership=a.elector,
                           store=a.store, metrics=Metrics(1.0), wall=clock)
        a.start()
        await eventually(a.elector.is_leader, within=5)
        victim = sorted(live_pods(sandbox))[0]
        await first.step(*verdict(view, {victim}))
        assert first.history.records[-1].result is Result.DONE
        for verb in ("get", "update", "create"):
            sandbox.deny("cdpr-alpha-token", verb, "leases", "coordination.k8s.io")
        await a.stop()  # its release is refused: the Lease still names alpha
        assert lease(sandbox)["holderIdentity"] == "alpha"
        await replaced(view, victim)

    async with replicas(sandbox, tmp_path, "gamma") as (c,), \
            watching(c.elector.leases.api_client) as view:
        restarted = Remediator(c.elector.leases.api_client, NS, RAILS, leadership=c.elector,
                               store=c.store, metrics=Metrics(1.0), wall=clock)
        c.start()
        await eventually(c.elector.is_leader, within=3 * FAST.lease_duration)
        assert lease(sandbox)["leaseTransitions"] == 1
        clock.now += 100
        other = sorted(live_pods(sandbox))[0]
        decision = await restarted.step(*verdict(view, {other}))
        assert decision.reason is Blocked.COOLDOWN
        assert restarted.status()["budget"]["cooldown_left_seconds"] == RAILS.cooldown - 100
        assert other in live_pods(sandbox)


@pytest.mark.looptime
async def test_takeover_with_the_default_timing_in_loop_time(tmp_path: Path) -> None:
    """client-go's 15/10/2 s, fast-forwarded: the lapsed leader stops within the renew
    deadline, the other takes over after one lease duration of silence."""
    timing = LeaseTiming()
    config = SandboxConfig(replicas=1, tls=False, timings=Timings(readiness_period=1.0))
    async with Sandbox(NullBackend(), config) as sandbox, \
            replicas(sandbox, tmp_path, "alpha", "beta", timing=timing) as (a, b):
        a.start()
        await eventually(a.elector.is_leader, within=30, step=0.1)
        b.start()
        await asyncio.sleep(5)
        loop = asyncio.get_running_loop()
        cut = loop.time()
        for verb in ("get", "update", "create"):
            sandbox.deny("cdpr-alpha-token", verb, "leases", "coordination.k8s.io")
        await eventually(b.elector.is_leader, within=60, step=0.1)
        a_stopped = next(t for leading, t in a.changes if not leading) - cut
        b_started = next(t for leading, t in b.changes if leading) - cut
        print(f"\ndefault timing: leader lapsed {a_stopped:.2f} s after the cut, "
              f"the other led {b_started:.2f} s after it (loop time)")
        assert a_stopped < b_started
        assert a_stopped <= timing.renew_deadline + 1.2 * timing.retry_period + 0.1
        assert b_started <= timing.lease_duration + 2 * 1.2 * timing.retry_period + 0.5
