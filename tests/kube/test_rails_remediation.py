"""The rails the review found leaky, through the real kubernetes_asyncio client against
the sandbox: an eviction whose answer is lost, dry-run escalations, an operator's edit
of the Lease, a replacement that never comes, repeated failures, the gave-up gauge on a
former leader, API hiccups at start, and a Lease the replica may not take.

Lost answers come from a relay on loopback between the client and a plain-HTTP
sandbox: it passes everything through, except that for the requests it is told to
spoil it closes the connection — before forwarding (the API never saw it) or after
the API server answered (it did the work; the answer is lost)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client

from corednsprobe.kube.lease import LeaderElector, LeaseStore
from corednsprobe.metrics import Metrics
from corednsprobe.remedy.history import History, Mode, Record, Result
from corednsprobe.remedy.policy import (
    FAILURES_BEFORE_ESCALATION,
    UNANSWERED_GRACE,
    Blocked,
    Verdict,
)
from corednsprobe.remedy.remediator import HISTORY_ANNOTATION, Remediator
from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS, R
from tests.kube.conftest import MakeSandbox, api_client_for, eventually
from tests.kube.test_leader import LEASE, Replica, replicas
from tests.kube.test_remediation import (
    NS,
    RAILS,
    Clock,
    events,
    live_pods,
    replaced,
    verdict,
    watching,
)

LEASES = R.require("coordination.k8s.io", "leases")
DEPLOYMENTS = R.require("apps", "deployments")
WORKLOAD = "Deployment/coredns"


class Relay:
    """A TCP relay to the sandbox on loopback that can lose chosen requests."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[tuple[bytes, str]] = []  # (bytes in the request head, when to cut)
        self.cut: list[str] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def lose(self, marker: bytes, when: str) -> None:
        """Cut the next request containing ``marker``: ``before`` or ``after`` the API
        server handled it."""
        self.rules.append((marker, when))

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.create_task(self._pipe(up_reader, writer))
        self._tasks.add(back)
        back.add_done_callback(self._tasks.discard)
        try:
            while chunk := await reader.read(65536):
                rule = next((r for r in self.rules if r[0] in chunk), None)
                if rule is None:
                    up_writer.write(chunk)
                    await up_writer.drain()
                    continue
                self.rules.remove(rule)
                back.cancel()
                await asyncio.gather(back, return_exceptions=True)
                if rule[1] == "after":
                    up_writer.write(chunk)
                    await up_writer.drain()
                    async with asyncio.timeout(10):
                        await self._until_answered(reader, up_reader, up_writer)
                self.cut.append(chunk.split(b"\r\n", 1)[0].decode())
                break
        except ConnectionError:
            pass
        finally:
            back.cancel()
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _until_answered(reader: asyncio.StreamReader, up_reader: asyncio.StreamReader,
                              up_writer: asyncio.StreamWriter) -> None:
        """Pass the rest of the request on until the API server answers; drop the answer."""
        answer = asyncio.create_task(up_reader.read(65536))
        while not answer.done():
            more = asyncio.create_task(reader.read(65536))
            await asyncio.wait({answer, more}, return_when=asyncio.FIRST_COMPLETED)
            if more.done() and more.result():
                up_writer.write(more.result())
                await up_writer.drain()
            else:
                more.cancel()
                await asyncio.gather(more, return_exceptions=True)
        await answer

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Answers back to the client; the connection is closed by ``_serve`` only."""
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()


@contextlib.asynccontextmanager
async def relayed(sandbox: Sandbox, tmp_path: Path, token: str | None = None,
                  ) -> AsyncIterator[tuple[Relay, client.ApiClient]]:
    """A client whose every request passes the relay."""
    upstream = int(sandbox.url.rsplit(":", 1)[1].split("/")[0])
    async with Relay(upstream) as relay:
        path = sandbox.write_kubeconfig(tmp_path / "kc-relayed", token=token)
        path.write_text(path.read_text().replace(sandbox.url, f"http://127.0.0.1:{relay.port}"))
        api = await api_client_for_path(path)
        async with api:
            yield relay, api


async def api_client_for_path(path: Path) -> client.ApiClient:
    from kubernetes_asyncio import config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return client.ApiClient(configuration)


async def plain_sandbox(make_sandbox: MakeSandbox, **options: Any) -> Sandbox:
    sandbox = await make_sandbox(tls=False, **options)
    assert sandbox.url.startswith("http://")
    return sandbox


def make(api: client.ApiClient, clock: Clock, mode: Mode = Mode.EVICT,
         leadership: LeaderElector | None = None, **rails: Any) -> Remediator:
    return Remediator(api, NS, dataclasses.replace(RAILS, mode=mode, **rails),
                      leadership=leadership,
                      store=LeaseStore(leadership) if leadership is not None else None,
                      metrics=Metrics(1.0), wall=clock)


def terminating(sandbox: Sandbox, name: str) -> bool:
    pod = sandbox.store.get(PODS, NS, name)
    return pod is not None and bool(pod["metadata"].get("deletionTimestamp"))


def gauge(remediator: Remediator) -> float:
    value = remediator.metrics.registry.get_sample_value("corednsprobe_gave_up", {})
    assert value is not None
    return value


# -- 1: an eviction whose answer is lost ---------------------------------------------------

async def test_an_eviction_whose_answer_was_lost_holds_the_next_one(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    """Five pods, A and B sick. A's eviction lands, its answer is lost; A terminates.
    30 s later B must not be evicted: A's restart is in flight until A is gone and
    its replacement ready; then B goes, after the cooldown."""
    sandbox = await plain_sandbox(make_sandbox, replicas=5, grace=3)
    clock = Clock()
    async with relayed(sandbox, tmp_path) as (relay, api), watching(api) as view:
        a, b = sorted(live_pods(sandbox))[:2]
        remediator = make(api, clock)
        relay.lose(b"/eviction", "after")
        first = await remediator.step(*verdict(view, {a, b}))
        assert (first.verdict, first.pod) == (Verdict.ACT, a)
        assert relay.cut and "eviction" in relay.cut[0]
        record = remediator.history.records[-1]
        assert record.result.value == "no_answer", record  # not "failed": it may have landed
        assert terminating(sandbox, a)  # the eviction did land

        await eventually(lambda: any(t.name == a and t.pod and t.pod.terminating
                                     for t in view.current.pods))
        clock.now += 30
        held = await remediator.step(*verdict(view, {a, b}))
        assert (held.verdict, held.reason) == (Verdict.BLOCKED, Blocked.IN_FLIGHT), held.detail
        assert b in live_pods(sandbox) and not terminating(sandbox, b)
        assert remediator.history.records[-1].result is Result.DONE  # the pod says it was

        await replaced(view, a, 5)
        clock.now += 10
        cooling = await remediator.step(*verdict(view, {b}))
        assert remediator.history.records[-1].settled_at == clock.now
        assert cooling.reason is Blocked.COOLDOWN
        clock.now += RAILS.cooldown
        second = await remediator.step(*verdict(view, {b}))
        assert (second.verdict, second.pod) == (Verdict.ACT, b)
        assert remediator.history.records[-1].result is Result.DONE


async def test_an_eviction_that_never_arrived_fails_without_a_cooldown(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await plain_sandbox(make_sandbox)
    clock = Clock()
    async with relayed(sandbox, tmp_path) as (relay, api), watching(api) as view:
        victim = sorted(live_pods(sandbox))[0]
        remediator = make(api, clock)
        relay.lose(b"/eviction", "before")
        await remediator.step(*verdict(view, {victim}))
        assert remediator.history.records[-1].result.value == "no_answer"
        clock.now += 5
        held = await remediator.step(*verdict(view, {victim}))
        assert held.reason is Blocked.IN_FLIGHT  # it may yet turn out to have landed

        clock.now += UNANSWERED_GRACE
        again = await remediator.step(*verdict(view, {victim}))
        first = remediator.history.records[0]
        assert first.result is Result.FAILED and "nothing changed" in first.detail
        assert (again.verdict, again.pod) == (Verdict.ACT, victim)  # no cooldown was spent
        assert remediator.history.records[-1].result is Result.DONE


# -- 2: dry-run escalations stay dry-run ----------------------------------------------------

async def test_dry_run_escalation_does_not_block_evict_after_switching(
        sandbox: Sandbox, tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha") as (a,), \
            watching(a.elector.leases.api_client) as view:
        api = a.elector.leases.api_client
        a.start()
        await eventually(a.elector.is_leader, within=5)
        preview = make(api, clock, Mode.DRY_RUN, leadership=a.elector)
        victim = sorted(live_pods(sandbox))[0]
        for _ in range(3):
            d = await preview.step(*verdict(view, {victim}))
            assert d.action is Mode.DRY_RUN
            clock.now += RAILS.cooldown + 1
        gave_up = await preview.step(*verdict(view, {victim}))
        assert gave_up.reason is Blocked.GAVE_UP
        assert any(e["reason"] == "ManualInterventionRequired"
                   and e["message"].startswith("dry-run: ") for e in events(sandbox, victim))

        # the operator is convinced and switches to evict: the next process reads the Lease
        real = make(api, clock, leadership=a.elector)
        d = await real.step(*verdict(view, {victim}))
        assert (d.verdict, d.action, d.pod) == (Verdict.ACT, Mode.EVICT, victim), d.detail
        assert real.history.records[-1].result is Result.DONE
        assert gauge(real) == 0


# -- 3: an operator's edit of the Lease wins -------------------------------------------------

def escalated_history(clock: Clock) -> str:
    fruitless = tuple(Record(clock.now - ago, f"coredns-old-{ago}", f"old-{ago}", WORKLOAD,
                             Mode.EVICT, Result.DONE, ready_before=2,
                             settled_at=clock.now - ago + 5) for ago in (3000, 2000, 1500))
    return History(fruitless, escalated=(WORKLOAD,)).to_json()


def annotate(sandbox: Sandbox, value: str | None) -> None:
    lease = sandbox.store.must_get(LEASES, NS, LEASE)
    annotations = lease["metadata"].setdefault("annotations", {})
    if value is None:
        annotations.pop(HISTORY_ANNOTATION, None)
    else:
        annotations[HISTORY_ANNOTATION] = value
    sandbox.registry.update(LEASES, NS, LEASE, lease)


async def test_deleting_the_annotation_clears_an_escalation_on_a_running_leader(
        sandbox: Sandbox, tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha") as (a,), \
            watching(a.elector.leases.api_client) as view:
        a.start()
        await eventually(a.elector.is_leader, within=5)
        annotate(sandbox, escalated_history(clock))  # a previous leader gave up
        await eventually(lambda: HISTORY_ANNOTATION in a.elector.annotations, within=5)
        remediator = make(a.elector.leases.api_client, clock, leadership=a.elector)
        victim = sorted(live_pods(sandbox))[0]
        d = await remediator.step(*verdict(view, {victim}))
        assert d.reason is Blocked.GAVE_UP

        annotate(sandbox, None)  # the operator clears it by hand, as documented
        await eventually(lambda: HISTORY_ANNOTATION not in a.elector.annotations, within=5)
        clock.now += 1
        with structlog.testing.capture_logs() as logs:
            d = await remediator.step(*verdict(view, {victim}))
        assert (d.verdict, d.pod) == (Verdict.ACT, victim), d.detail
        assert any(e["event"] == "remediation_history_reloaded" for e in logs)
        stored = History.from_json(sandbox.store.must_get(LEASES, NS, LEASE)["metadata"][
            "annotations"][HISTORY_ANNOTATION])
        assert stored.escalated == () and [r.pod for r in stored.records] == [victim]


async def test_a_leader_never_writes_its_history_over_an_edit_it_has_not_read(
        sandbox: Sandbox, tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha") as (a,):
        a.start()
        await eventually(a.elector.is_leader, within=5)
        assert await a.store.write({HISTORY_ANNOTATION: "ours"})
        annotate(sandbox, escalated_history(clock))  # the elector has not read it yet
        stored = await a.store.write({HISTORY_ANNOTATION: "newer"},
                                     expect={HISTORY_ANNOTATION: "ours"})
        assert not stored
        current = sandbox.store.must_get(LEASES, NS, LEASE)["metadata"]["annotations"]
        assert current[HISTORY_ANNOTATION] == escalated_history(clock)


# -- 4: a replacement that never comes --------------------------------------------------------

async def test_a_replacement_that_never_comes_blocks_and_escalates(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=3)
    clock = Clock()
    async with await api_client_for(sandbox, tmp_path / "kc") as api, watching(api) as view:
        remediator = make(api, clock)
        a = sorted(live_pods(sandbox))[0]
        await remediator.step(*verdict(view, {a}))
        record = remediator.history.records[-1]
        assert (record.result, record.ready_before) == (Result.DONE, 3)
        deployment = sandbox.store.must_get(DEPLOYMENTS, NS, "coredns")
        deployment["spec"]["replicas"] = 2  # someone scaled down: the count never comes back
        sandbox.registry.update(DEPLOYMENTS, NS, "coredns", deployment)
        await eventually(lambda: len(live_pods(sandbox)) == 2
                         and a not in {t.name for t in view.current.pods}
                         and sum(1 for t in view.current.pods if t.pod and t.pod.ready) == 2)
        b = sorted(live_pods(sandbox))[0]

        clock.now += RAILS.settle_timeout + RAILS.cooldown
        held = await remediator.step(*verdict(view, {b}))
        assert (held.verdict, held.reason) == (Verdict.BLOCKED, Blocked.IN_FLIGHT)
        assert "never became ready" in held.detail
        assert b in live_pods(sandbox)
        assert remediator.history.records[-1].settled_at is None
        assert gauge(remediator) == 1
        clock.now += 3600
        again = await remediator.step(*verdict(view, {b}))
        assert again.verdict is Verdict.BLOCKED and b in live_pods(sandbox)
    manual = [e for e in events(sandbox) if e["reason"] == "ManualInterventionRequired"]
    assert {e["involvedObject"]["kind"] for e in manual} == {"Pod", "Deployment"}
    assert len(manual) == 2 and all("never became ready" in e["message"] for e in manual)


# -- 5: the gave-up gauge on a replica that no longer leads -------------------------------------

async def test_a_former_leader_shows_the_gauge_of_the_history_it_mirrors(
        sandbox: Sandbox, tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha", "beta") as (a, b), \
            watching(a.elector.leases.api_client) as view:
        a.start()
        await eventually(a.elector.is_leader, within=5)
        annotate(sandbox, escalated_history(clock))
        await eventually(lambda: HISTORY_ANNOTATION in a.elector.annotations, within=5)
        first = make(a.elector.leases.api_client, clock, leadership=a.elector)
        second = make(b.elector.leases.api_client, clock, leadership=b.elector)
        victim = sorted(live_pods(sandbox))[0]
        assert (await first.step(*verdict(view, {victim}))).reason is Blocked.GAVE_UP
        assert gauge(first) == 1

        await a.stop()  # alpha steps down; beta leads and sees the workload healthy
        b.start()
        await eventually(b.elector.is_leader, within=5)
        await second.step(*verdict(view, set()))
        assert second.history.escalated == () and gauge(second) == 0

        restarted = Replica(a.elector.leases.api_client, "alpha")
        first.leadership, first.store = restarted.elector, restarted.store
        restarted.start()
        try:
            await eventually(lambda: '"escalated":[]' in restarted.elector.annotations.get(
                HISTORY_ANNOTATION, ""), within=5)
            clock.now += 1
            d = await first.step(*verdict(view, {victim}))
            assert d.reason is Blocked.NOT_LEADER
            assert gauge(first) == 0  # not the stale 1 it set while it led
        finally:
            await restarted.stop()


async def test_a_follower_reports_an_escalation_it_mirrors(sandbox: Sandbox,
                                                           tmp_path: Path) -> None:
    clock = Clock()
    async with replicas(sandbox, tmp_path, "alpha", "beta") as (a, b), \
            watching(a.elector.leases.api_client) as view:
        a.start()
        await eventually(a.elector.is_leader, within=5)
        annotate(sandbox, escalated_history(clock))
        b.start()
        await eventually(lambda: HISTORY_ANNOTATION in b.elector.annotations, within=5)
        follower = make(b.elector.leases.api_client, clock, leadership=b.elector)
        d = await follower.step(*verdict(view, {sorted(live_pods(sandbox))[0]}))
        assert d.reason is Blocked.NOT_LEADER and gauge(follower) == 1


# -- 6: hiccups at start ---------------------------------------------------------------------

async def test_a_lost_answer_during_the_permission_check_is_retried(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await plain_sandbox(make_sandbox)
    token = "cdpq-noevict-token"
    sandbox.add_token(token, "system:serviceaccount:kube-system:corednsprobe",
                      [Rule.of(["*"], ["*"])])
    sandbox.deny(token, "create", "pods/eviction")
    async with relayed(sandbox, tmp_path, token=token) as (relay, api):
        relay.lose(b"selfsubjectaccessreviews", "before")
        remediator = make(api, Clock())
        with structlog.testing.capture_logs() as logs:
            await remediator.self_check()
        assert relay.cut  # the first attempt lost its connection...
        failed = [e for e in logs if e["event"] == "permission_check_failed"]
        assert failed and failed[0]["error_type"] == "ServerDisconnectedError"
        assert remediator.rails.mode is Mode.DRY_RUN  # ...and the retry found the gap
        assert "create pods/eviction" in remediator.downgraded


async def test_a_lease_with_a_null_spec_is_taken_over(sandbox: Sandbox,
                                                      tmp_path: Path) -> None:
    """A Lease created by hand without a spec reads as ``spec: null`` through the client."""
    sandbox.registry.create(LEASES, NS, {"apiVersion": "coordination.k8s.io/v1",
                                         "kind": "Lease", "metadata": {"name": LEASE}})
    found = sandbox.store.must_get(LEASES, NS, LEASE)
    assert not found.get("spec")
    async with replicas(sandbox, tmp_path, "alpha") as (a,):
        a.start()
        await eventually(lambda: a.elector.is_leader() or (a.task is not None
                                                           and a.task.done()), within=5)
        assert a.task is not None and not a.task.done()
        assert a.elector.is_leader()
        assert sandbox.store.must_get(LEASES, NS, LEASE)["spec"]["holderIdentity"] == "alpha"


# -- 7: repeated failures escalate ----------------------------------------------------------

async def test_repeated_failures_escalate_once_with_an_event(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    clock = Clock()
    async with watching(api) as view:
        remediator = make(api, clock)
        victim = sorted(live_pods(sandbox))[0]
        sandbox.fail_requests(100, 500, path_contains="/eviction")
        for _ in range(FAILURES_BEFORE_ESCALATION):
            d = await remediator.step(*verdict(view, {victim}))
            assert d.verdict is Verdict.ACT
            clock.now += RAILS.error_backoff + 1
        assert [(r.result, r.count) for r in remediator.history.records] == [
            (Result.FAILED, FAILURES_BEFORE_ESCALATION)]
        for _ in range(3):
            d = await remediator.step(*verdict(view, {victim}))
            assert d.reason is Blocked.GAVE_UP
            clock.now += RAILS.error_backoff + 1
        assert f"{FAILURES_BEFORE_ESCALATION} attempts in a row" in d.detail
        assert gauge(remediator) == 1
        assert victim in live_pods(sandbox)

        sandbox.fail_requests(0)
        await remediator.step(*verdict(view, set()))  # it recovered on its own
        assert remediator.history.escalated == () and gauge(remediator) == 0
    manual = [e for e in events(sandbox) if e["reason"] == "ManualInterventionRequired"]
    assert len(manual) == 2 and all("attempts in a row" in e["message"] for e in manual)


# -- 8: a Lease the replica may not take -----------------------------------------------------

async def test_without_lease_permissions_status_says_it_never_leads(
        sandbox: Sandbox, tmp_path: Path) -> None:
    token = "cdpq-nolease-token"
    sandbox.add_token(token, "system:serviceaccount:kube-system:corednsprobe",
                      [Rule.of(["*"], ["*"])])
    for verb in ("get", "create", "update"):
        sandbox.deny(token, verb, "leases", "coordination.k8s.io")
    async with await api_client_for(sandbox, tmp_path / "kc", token=token) as api:
        remediator = make(api, Clock())
        with structlog.testing.capture_logs() as logs:
            await remediator.self_check()
        status = remediator.status()
        assert status["mode"] == "dry-run" and status["configured_mode"] == "evict"
        assert status["downgraded"].startswith("cannot take the Lease: ")
        assert "leases" in status["downgraded"]
        assert any(e["event"] == "remediation_downgraded" and "Lease" in e["reason"]
                   for e in logs)


async def test_a_lease_refused_later_is_reported_too(sandbox: Sandbox, tmp_path: Path) -> None:
    async with replicas(sandbox, tmp_path, "alpha") as (a,), \
            watching(a.elector.leases.api_client) as view:
        for verb in ("get", "create", "update"):
            sandbox.deny("cdpr-alpha-token", verb, "leases", "coordination.k8s.io")
        a.start()
        await eventually(lambda: bool(a.elector.refused), within=5)
        remediator = make(a.elector.leases.api_client, Clock(), leadership=a.elector)
        with structlog.testing.capture_logs() as logs:
            d = await remediator.step(*verdict(view, {sorted(live_pods(sandbox))[0]}))
        assert d.reason is Blocked.NOT_LEADER
        status = remediator.status()
        assert status["leader"] is False and status["mode"] == "dry-run"
        assert status["downgraded"].startswith("cannot take the Lease: ")
        assert any(e["event"] == "remediation_downgraded" for e in logs)

