"""Remediator: turns each round's diagnosis into at most one safe restart, and says so.

Owns: the confirmation of candidates (since when each has been one), the
fresh read of a pod before restarting it, the in-flight state and the
remediation history (loaded from the Lease when this replica becomes the
leader, and again whenever someone else changed the annotation — an operator
clearing an escalation; written back before and after every action, never
over such a change), the permission self-check
(retried with backoff through API hiccups) that downgrades to dry-run loudly
— also when the Lease cannot be taken, since then nothing is ever done — the
Events (a pod becomes a candidate, a restart, a block, an escalation), the
remediation metrics and the /status section.
Never does: probe, judge health, or decide a rail itself — the policy in
policy.py does that; nor act unless this replica leads.

``on_diagnosis`` never blocks the probe loop: it hands the newest verdict to
``run``, which works through it one at a time, so at most one action is ever
in flight and a slow API only means older verdicts are skipped. Its ``then``
hears once per verdict: the decision made on it, or None when it was skipped
(a newer verdict came first, or the remediator stopped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from corednsprobe import logs
from corednsprobe.backoff import Backoff
from corednsprobe.config import Settings
from corednsprobe.kube.access import PermissionReport, check_permissions, remediation_permissions
from corednsprobe.kube.client import ApiClient
from corednsprobe.kube.view import workload_of as controller_of
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    PodRef,
    Target,
    TargetKey,
    TargetKind,
)
from corednsprobe.remedy import actions
from corednsprobe.remedy.actions import ActionOutcome, Involved, Reason
from corednsprobe.remedy.history import (
    DISRUPTIVE,
    UNCONFIRMED,
    History,
    Mode,
    Record,
    Result,
    iso,
)
from corednsprobe.remedy.policy import (
    Blocked,
    Decision,
    PodNow,
    Rails,
    RemediationPolicy,
    Verdict,
    budget,
    candidacy,
    candidate_key,
    ready_pods,
    recover,
    refusal,
    settle,
    workload_of,
)

log = logs.get(__name__)
HISTORY_ANNOTATION = "corednsprobe.io/remediation-history"
QUIET_BLOCKS = frozenset({Blocked.MODE_OFF, Blocked.NOT_LEADER, Blocked.CONFIRMING,
                          Blocked.POD_GONE, Blocked.UNVERIFIED})
STEP_RETRY = 5.0  # seconds after an unexpected failure of one step
SELF_CHECK_BACKOFF = Backoff(1.0, 30.0).schedule(6)  # 1, 2, 4, 8, 16, 30 s between attempts


class Leadership(Protocol):
    """Who leads: only the leader acts; followers say who does."""

    identity: str

    def is_leader(self) -> bool: ...

    @property
    def holder(self) -> str: ...

    @property
    def refused(self) -> str: ...


class HistoryStore(Protocol):
    """Where the history lives between leaders: a compare-and-swap on one key."""

    def get(self, key: str) -> str: ...

    async def put(self, key: str, value: str, *, expect: str) -> bool: ...


def rails_from(settings: Settings) -> Rails:
    return Rails(mode=Mode(settings.remediation), cooldown=settings.cooldown,
                 max_per_hour=settings.max_restarts_per_hour, min_ready=settings.min_ready,
                 give_up_after=settings.give_up_after, min_pod_age=settings.min_pod_age,
                 confirm=settings.confirm, settle_period=settings.settle_period)


class Remediator:
    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        rails: Rails,
        *,
        leadership: Leadership | None,
        store: HistoryStore | None = None,
        metrics: Metrics,
        lease_namespace: str = "",
        service: str = "kube-dns",
        lease_name: str = "",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.service = service
        self.lease_namespace = lease_namespace or namespace
        self.lease_name = lease_name  # asked about by name: the Role may name only it
        self.configured = rails.mode
        self.policy = RemediationPolicy(rails)
        self.leadership = leadership
        self.store = store  # None: the history lives in this process only
        self.metrics = metrics
        self.wall = wall
        self.history = History()
        self._written = ""  # the history annotation as this replica last wrote or read it
        self.decision = Decision(Verdict.IDLE, "no verdict yet")
        self.events_allowed = True
        self.downgraded = ""  # why the mode fell back to dry-run, if it did
        self._latest: tuple[Diagnosis, Mapping[TargetKey, Health]] | None = None
        self._then: Callable[[Decision | None], None] | None = None
        self._wake = asyncio.Event()
        self._leading = False
        self._candidates: set[str] = set()  # uids already reported as candidates
        self._since: dict[str, float] = {}  # candidate -> since when, without a break
        self._recovery_told: set[tuple[str, float]] = set()  # (uid, at) of restarts announced
        self._last_block: tuple[str, Blocked] | None = None
        self._failing_since: dict[str, float] = {}  # pod uid -> first failure seen, unbroken
        self._onsets: dict[str, tuple[float | None, float | None, frozenset[str]]] = {}
        # restarted uid -> (first failure seen, judged unhealthy since, the uids of the
        # pods there then), for the recovery's timeline and its replacement
        self.recoveries: list[dict[str, Any]] = []  # the newest few, for /status
        self._targets: Sequence[Target] = ()  # the pods as the newest verdict saw them
        self._workloads: set[str] = set()  # of the pods in the latest verdict, for the gauge

    @property
    def rails(self) -> Rails:
        return self.policy.rails

    @property
    def identity(self) -> str:
        return self.leadership.identity if self.leadership else "corednsprobe"

    # -- the hand-off from the probe loop ------------------------------------------------

    def on_diagnosis(self, diagnosis: Diagnosis, healths: Mapping[TargetKey, Health],
                     then: Callable[[Decision | None], None] | None = None) -> None:
        """Keep only the newest verdict and wake ``run``; never blocks. Every verdict,
        also one ``run`` skips, counts for whether a candidate stayed one throughout.

        ``then`` is called once: with the decision made on this verdict, or with
        None when it is skipped."""
        self._since = candidacy(self._since, diagnosis, self.wall())
        self._latest = (diagnosis, dict(healths))
        self._settle_then(None)
        self._then = then
        self._wake.set()

    def _settle_then(self, decision: Decision | None) -> None:
        then, self._then = self._then, None
        if then is not None:
            then(decision)

    async def run(self) -> None:
        """Check permissions once, then work through verdicts until cancelled.

        Never built in mode ``off`` (the service makes no Remediator then)."""
        then: Callable[[Decision | None], None] | None = None
        try:
            await self.self_check()
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._latest is None:
                    continue
                then, self._then = self._then, None
                try:
                    decided: Decision | None = await self.step(*self._latest)
                except Exception:  # a fault here must never stop the probing beside it
                    log.exception("remediation_step_failed", retry_in=STEP_RETRY)
                    self.metrics.remediation_blocked_by("internal_error")
                    decided = None
                told, then = then, None
                if told is not None:
                    told(decided)
                if decided is None:
                    await asyncio.sleep(STEP_RETRY)
        finally:
            if then is not None:
                then(None)
            self._settle_then(None)

    async def self_check(self) -> None:
        """Ask the API (SSAR) for the writes the mode needs; without them, dry-run, loudly.

        Any failure to ask (a reset connection, a garbled answer) is logged and
        retried with backoff; after the last attempt the configured mode stands,
        and a 403 later still downgrades it.
        """
        wanted = remediation_permissions(self.rails.mode.value, self.namespace,
                                         self.lease_namespace, self.lease_name)
        for pause in (*SELF_CHECK_BACKOFF, None):
            try:
                report = await check_permissions(self.api, wanted)
            except Exception as exc:  # an edge: whatever the API or the wire did
                log.warning("permission_check_failed", error=str(exc) or type(exc).__name__,
                            error_type=type(exc).__name__, retry_in=pause)
                if pause is None:
                    return
                await asyncio.sleep(pause)
                continue
            self._apply(report)
            return

    def _apply(self, report: PermissionReport) -> None:
        for p in report.missing_optional:
            log.warning("permission_missing", permission=p.what, purpose=p.purpose, grant=p.rule)
            if p.resource == "events":
                self.events_allowed = False
        for p in report.missing_required:
            log.error("permission_missing", permission=p.what, purpose=p.purpose, grant=p.rule)
        lease = [p for p in report.missing_required if p.resource == "leases"]
        write = [p for p in report.missing_required if p.resource != "leases"]
        why = [f"cannot take the Lease: missing permission {p.what}; grant: {p.rule}"
               for p in lease[:1]]
        why += [f"missing permission: {p.what}; grant: {p.rule}" for p in write[:1]]
        if why:
            self._downgrade("; ".join(why))

    def _downgrade(self, why: str) -> None:
        if self.rails.mode in (Mode.DRY_RUN, Mode.OFF):
            return
        log.error("remediation_downgraded", configured=self.configured.value, now="dry-run",
                  reason=why)
        self.downgraded = why
        self.policy = RemediationPolicy(dataclasses.replace(self.rails, mode=Mode.DRY_RUN))

    # -- one verdict ------------------------------------------------------------------------

    async def step(self, diagnosis: Diagnosis, healths: Mapping[TargetKey, Health]) -> Decision:
        """Bring the history up to date, decide, and act or report the block."""
        now = self.wall()
        self._since = candidacy(self._since, diagnosis, now)
        targets = [h.target for h in healths.values()]
        self._targets = targets
        self._workloads = {workload_of(t) for t in targets if t.kind is TargetKind.POD}
        leading = self._lead()
        self._check_lease_refused(leading)
        if not leading:
            self._follow()
            self.decision = self._as_follower(diagnosis, healths, targets, now)
            self._show_gave_up()
            return self.decision
        self._reload_if_edited()
        self._note_failing(healths, now)
        settled = settle(self.history, targets, now)
        await self._announce_confirmed(self.history, settled, now)
        self.history = recover(settled, healths, now, self.rails.settle_period)
        await self._announce_recovered(settled, self.history, healths, now)
        await self._report_candidates(diagnosis, now)
        decision = self.policy.decide(diagnosis, healths, targets, self.history, now,
                                      self._since)
        if decision.verdict is Verdict.ACT:
            decision = self._still_wanted(await self._verified(decision))
        self.decision = decision
        if decision.verdict is Verdict.BLOCKED:
            await self._blocked(decision, now)
        else:
            self._last_block = None
        self._show_gave_up()
        if self.history.to_json() != self._written:
            await self._persist()
        if decision.verdict is Verdict.ACT:
            if (latest := self._still_wanted(decision)) is not decision:
                self.decision = latest  # withdrawn while the history was stored
                return latest
            assert decision.target is not None
            self._onset(decision.target, healths)
            await self._act(decision, targets, now)
        return decision

    def _show_gave_up(self) -> None:
        """The gauge follows the history this replica holds or mirrors, leader or not."""
        dry = self.rails.mode is Mode.DRY_RUN
        self.metrics.set_gave_up(self.history.escalated_of(dry), self._workloads)

    def _check_lease_refused(self, leading: bool) -> None:
        refused = self.leadership.refused if self.leadership is not None else ""
        if refused and not leading:
            self._downgrade(f"cannot take the Lease: {refused}")

    def _lead(self) -> bool:
        leading = self.leadership is None or self.leadership.is_leader()
        if leading and not self._leading:
            self._load()
        self._leading = leading
        return leading

    def _load(self) -> None:
        """Take over the history the previous leader left on the Lease."""
        if self.store is None:
            return
        self.history = self._read_lease_history()
        self._written = self._lease_text()
        self._candidates.clear()
        self._last_block = None
        log.info("remediation_history_loaded", records=len(self.history.records),
                 escalated=list(self.history.escalated))

    def _reload_if_edited(self) -> None:
        """Someone else changed the history on the Lease (an operator cleared an escalation,
        or deleted the annotation): take theirs, never write ours back over it."""
        if self.store is None or self._lease_text() == self._written:
            return
        self.history = self._read_lease_history()
        self._written = self._lease_text()
        self._last_block = None
        log.warning("remediation_history_reloaded", annotation=HISTORY_ANNOTATION,
                    records=len(self.history.records), escalated=list(self.history.escalated),
                    reason="the annotation on the Lease was changed by someone else")

    def _lease_text(self) -> str:
        assert self.store is not None
        return self.store.get(HISTORY_ANNOTATION)

    def _follow(self) -> None:
        """A follower mirrors the leader's history, for /status."""
        if self.store is not None:
            self.history = self._read_lease_history()

    def _read_lease_history(self) -> History:
        text = self._lease_text()
        if not text:
            return History()
        try:
            return History.from_json(text)
        except ValueError as exc:
            log.error("remediation_history_unreadable", annotation=HISTORY_ANNOTATION,
                      error=str(exc), consequence="cooldowns and budgets start afresh")
            return History()

    def _as_follower(self, diagnosis: Diagnosis, healths: Mapping[TargetKey, Health],
                     targets: Sequence[Target], now: float) -> Decision:
        would = self.policy.decide(diagnosis, healths, targets, self.history, now,
                                   self._since)
        if would.verdict is Verdict.IDLE:
            return would
        holder = self.leadership.holder if self.leadership else ""
        return Decision(Verdict.BLOCKED, f"not the leader ({holder or 'nobody'} leads): "
                        f"{would.detail}", would.target, None, Blocked.NOT_LEADER)

    async def _persist(self) -> bool:
        """Store the history, unless the annotation is no longer what we last wrote."""
        text = self.history.to_json()
        if self.store is None:
            self._written = text
            return True
        stored = await self.store.put(HISTORY_ANNOTATION, text, expect=self._written)
        if stored:
            self._written = text
        else:
            log.warning("remediation_history_not_stored",
                        lease_holder=self.leadership.holder if self.leadership else None)
        return stored

    # -- reporting --------------------------------------------------------------------------

    async def _report_candidates(self, diagnosis: Diagnosis, now: float) -> None:
        if diagnosis.state is not DiagnosisState.POD:
            self._candidates.clear()
            return
        current = {t.pod.uid or t.name: t for t in diagnosis.candidates if t.pod}
        for key in current.keys() - self._candidates:
            target = current[key]
            evidence = diagnosis.evidence_of(target.name)
            kubelet = diagnosis.kubelet_view_of(target.name)
            await self._event(target.pod, Reason.PROBE_FAILED,
                              f"DNS probes of {target.name} ({target.address}) failed: "
                              f"{evidence}. {f'Health endpoints: {kubelet}. ' if kubelet else ''}"
                              f"{diagnosis.reason}", warning=True, now=now)
        self._candidates = set(current)

    async def _blocked(self, decision: Decision, now: float) -> None:
        assert decision.reason is not None
        if decision.escalate:
            await self._escalate(decision, now)
        key = (decision.pod, decision.reason)
        if key == self._last_block:
            return
        self._last_block = key
        self.metrics.remediation_blocked_by(decision.reason.value)
        log.info("remediation_blocked", pod=decision.pod or None, reason=decision.reason.value,
                 detail=decision.detail)
        if decision.target is not None and not decision.escalate \
                and decision.reason not in QUIET_BLOCKS \
                and (decision.target.pod is None or decision.target.pod.uid):
            await self._event(decision.target.pod, Reason.BLOCKED,
                              f"not restarted ({decision.reason.value}): {decision.detail}",
                              warning=True, now=now)

    async def _escalate(self, decision: Decision, now: float) -> None:
        """Once per workload and kind (real or dry-run): a log line and the Events."""
        workload, dry = decision.escalate, self.rails.mode is Mode.DRY_RUN
        if workload in self.history.escalated_of(dry):
            return
        self.history = self.history.escalate(workload, dry)
        self._show_gave_up()
        pods = self.pods_of(workload)
        log.error("remediation_gave_up", workload=workload, pod=decision.pod or None,
                  dry_run=dry, detail=decision.detail, pods=pods)
        if decision.target is not None:
            facts = "; ".join(f"{p['name']}: " + ", ".join(p["described"]) for p in pods)
            await self._event(decision.target.pod, Reason.MANUAL,
                              f"{'dry-run: ' if dry else ''}{decision.detail}"
                              f"{'. Pods: ' + facts if facts else ''}", warning=True,
                              now=now, workload=workload)

    def pods_of(self, workload: str) -> list[dict[str, Any]]:
        """Per pod of ``workload``: its containers' restarts, last termination (e.g.
        OOMKilled) and resources, as the pods are watched — what the person who must
        intervene needs to tell a crash loop from a pod short of memory."""
        return [{"name": t.name, "containers": [c.as_dict() for c in t.pod.containers],
                 "described": [c.describe() for c in t.pod.containers]}
                for t in sorted(self._targets, key=lambda t: t.name)
                if t.pod is not None and workload_of(t) == workload]

    async def _event(self, pod: PodRef | None, reason: str, message: str, *, warning: bool,
                     now: float, workload: str = "") -> None:
        """An Event on the pod, and on ``workload`` (e.g. the Deployment) when named."""
        if not self.events_allowed or pod is None:
            return
        about = [Involved.pod(pod, self.namespace)]
        owner = Involved.workload(workload, self.namespace) if workload else None
        if owner is not None:
            about.append(owner)
        for involved in about:
            await actions.post_event(self.api, involved, reason, message, warning=warning,
                                     instance=self.identity, now=now)

    # -- acting -----------------------------------------------------------------------------

    async def _verified(self, decision: Decision) -> Decision:
        """Read the pod fresh before touching it; the decision, or why not after all."""
        target = decision.target
        assert target is not None and target.pod is not None
        try:
            fresh = await actions.read_fresh(self.api, self.namespace, self.service,
                                             target.pod.name)
            meta = (fresh.pod or {}).get("metadata") or {}
            now = PodNow(exists=fresh.pod is not None, uid=str(meta.get("uid") or ""),
                         terminating=bool(meta.get("deletionTimestamp")),
                         labels=dict(meta.get("labels") or {}), workload=controller_of(meta),
                         selector=dict((fresh.service.get("spec") or {}).get("selector")
                                       or {}),
                         endpoint=target.pod.uid in actions.endpoint_uids(fresh.endpoints))
        except Exception as exc:  # an edge: whatever the API or the wire did
            why = (Blocked.UNVERIFIED, f"{target.name} could not be read fresh before "
                   f"restarting it ({type(exc).__name__}: {exc}); asked again next round")
        else:
            if (refused := refusal(target, now)) is None:
                return decision
            why = refused
        if why[0] is Blocked.NOT_OURS:
            log.warning("remediation_refused", pod=target.name, address=target.address,
                        reason=why[0].value, detail=why[1])
        return Decision(Verdict.BLOCKED, why[1], target, None, why[0])

    def _still_wanted(self, decision: Decision) -> Decision:
        """The decision, unless a verdict that arrived while the pod was read withdrew it.

        The fresh read awaits the API; meanwhile newer verdicts may have turned
        ``suspect`` or ``widespread``, or dropped the pod. Every verdict updates
        ``_since``, so a pod no longer in it is no longer a confirmed candidate."""
        target = decision.target
        if decision.verdict is not Verdict.ACT or target is None \
                or candidate_key(target) in self._since:
            return decision
        return Decision(Verdict.BLOCKED, f"a newer verdict no longer names {target.name}: "
                        "its confirmation starts afresh", target, None, Blocked.CONFIRMING)

    async def _act(self, decision: Decision, targets: Sequence[Target], now: float) -> None:
        target, action = decision.target, decision.action
        assert target is not None and target.pod is not None and action is not None
        record = Record(now, target.name, target.pod.uid, workload_of(target), action,
                        Result.STARTED, ready_before=len(ready_pods(targets)))
        if action is Mode.DRY_RUN:
            await self._dry_run(record, target, decision, now)
            return
        previous = self.history
        self.history = self.history.add(record, now)
        if not await self._persist():  # write-ahead: a crash after acting still counts
            self.history = previous
            log.warning("remediation_skipped", pod=target.name,
                        reason="the history could not be stored on the Lease")
            return
        log.warning("remediation_started", pod=target.name, action=action.value,
                    workload=record.workload, detail=decision.detail)
        run = actions.evict if action is Mode.EVICT else actions.delete
        outcome = await run(self.api, self.namespace, target.pod)
        await self._record_outcome(record, target, outcome, now)

    async def _dry_run(self, record: Record, target: Target, decision: Decision,
                       now: float) -> None:
        done = dataclasses.replace(record, result=Result.DRY_RUN, settled_at=now)
        self.history = self.history.add(done, now)
        await self._persist()
        self.metrics.remediation_attempted(Mode.DRY_RUN.value, Result.DRY_RUN.value, now)
        verb = self.configured.value if self.configured is not Mode.DRY_RUN else "restart"
        log.warning("remediation_dry_run", pod=target.name, would=verb, detail=decision.detail,
                    downgraded=self.downgraded or None)
        await self._event(target.pod, Reason.DRY_RUN,
                          f"dry-run: would {verb} {target.name}. {decision.detail}",
                          warning=False, now=now)

    async def _record_outcome(self, record: Record, target: Target, outcome: ActionOutcome,
                              now: float) -> None:
        r = self.rails
        retry_at = None
        if outcome.result is Result.PDB_BLOCKED:
            retry_at = now + (outcome.retry_after or r.cooldown)
        elif outcome.result is Result.FAILED:
            retry_at = now + (outcome.retry_after or r.error_backoff)
        done = dataclasses.replace(
            record, result=outcome.result, retry_at=retry_at,
            settled_at=None if outcome.result in DISRUPTIVE else now,
            detail=outcome.message[:200])
        self.history = self.history.conclude(done)
        await self._persist()
        disruptive = done.disruptive
        self.metrics.remediation_attempted(record.action.value, outcome.result.value,
                                           now if disruptive else None)
        await self._announce(done, target, outcome, now)

    async def _announce_confirmed(self, before: History, after: History, now: float) -> None:
        """A restart whose answer never came (or that a crash left ``started``) and that
        the pods now show took effect: say so, as if the answer had come."""
        for old, new in zip(before.records, after.records, strict=True):
            if old.result in UNCONFIRMED and new.result is Result.DONE:
                log.warning("pod_restarted", pod=new.pod, action=new.action.value,
                            status=None, message=new.detail, confirmed_by="the pod")
                await self._event(PodRef(new.pod, uid=new.uid), Reason.RESTARTED,
                                  f"{new.action.value}: {new.pod} restarted; the attempt's "
                                  f"answer never came, the pod shows it: {new.detail}",
                                  warning=False, now=now, workload=new.workload)

    def _note_failing(self, healths: Mapping[TargetKey, Health], now: float) -> None:
        """Since when each pod has shown failures without a clean window between."""
        failing = {h.target.pod.uid: h for h in healths.values()
                   if h.target.pod is not None and h.target.pod.uid
                   and (h.failures or h.state is HealthState.UNHEALTHY)}
        self._failing_since = {uid: self._failing_since.get(uid, now) for uid in failing}

    def _onset(self, target: Target, healths: Mapping[TargetKey, Health]) -> None:
        uid = target.pod.uid if target.pod is not None else ""
        h = healths.get(target.key)
        judged = h.since if h is not None and h.state is HealthState.UNHEALTHY and h.since \
            else None
        there = frozenset(h.target.pod.uid for h in healths.values() if h.target.pod)
        self._onsets[uid] = (self._failing_since.get(uid), judged, there)
        for old in list(self._onsets)[:-20]:  # a bounded memory
            del self._onsets[old]

    async def _announce_recovered(self, before: History, after: History,
                                  healths: Mapping[TargetKey, Health], now: float) -> None:
        """A restart whose workload is now wholly judged healthy: log it with the
        timeline (first failure, verdict, restart, recovery) and post an Event, once per
        restart even when the settle period takes a recovery back and it recovers again."""
        self._recovery_told &= {(r.uid, r.at) for r in after.records}
        for old, new in zip(before.records, after.records, strict=True):
            if old.recovered_at is not None or new.recovered_at is None or new.dry_run \
                    or new.result not in (Result.DONE, Result.GONE):
                continue
            if (new.uid, new.at) in self._recovery_told:
                continue  # recovered, relapsed within the settle period, recovered again
            self._recovery_told.add((new.uid, new.at))
            failing, judged, there = self._onsets.pop(new.uid, (None, None, None))
            replacements = sorted(
                (h.target for h in healths.values()
                 if h.target.pod is not None and workload_of(h.target) == new.workload
                 and (h.target.pod.uid not in there if there is not None
                      else (h.target.pod.created_at or 0.0) >= new.at)),
                key=lambda t: t.name)
            steps = {"detect_seconds": _span(failing, judged),
                     "act_seconds": _span(judged or failing, new.at),
                     "recover_seconds": _span(new.at, new.recovered_at),
                     "total_seconds": _span(failing or judged or new.at, new.recovered_at)}
            said = {"pod": new.pod, "action": new.action.value, "workload": new.workload,
                    "replacement": [t.name for t in replacements],
                    "failing_since": iso(failing) if failing else None,
                    "judged_unhealthy_at": iso(judged) if judged else None,
                    "restarted_at": iso(new.at), "recovered_at": iso(new.recovered_at),
                    **steps}
            self.recoveries = [*self.recoveries[-4:], said]
            log.info("remediation_recovered", **said)
            timeline = ", ".join(f"{k.removesuffix('_seconds')} {v:g}s"
                                 for k, v in steps.items() if v is not None)
            about = replacements[0].pod if replacements else PodRef(new.pod, uid=new.uid)
            which = f" (replacement {replacements[0].name})" if replacements else ""
            await self._event(about, Reason.RECOVERED,
                              f"after {new.action.value} of {new.pod} every pod of "
                              f"{new.workload or 'the workload'} is judged healthy{which}; "
                              f"{timeline}", warning=False, now=now, workload=new.workload)

    async def _announce(self, done: Record, target: Target, outcome: ActionOutcome,
                        now: float) -> None:
        fields = {"pod": target.name, "action": done.action.value, "status": outcome.status,
                  "message": outcome.message}
        if done.result in (Result.DONE, Result.GONE):
            how = "restarted" if done.result is Result.DONE else "already gone or replaced"
            log.warning("pod_restarted" if done.result is Result.DONE else "pod_already_gone",
                        **fields)
            await self._event(target.pod, Reason.RESTARTED,
                              f"{done.action.value}: {target.name} {how}", warning=False,
                              now=now, workload=done.workload)
        elif done.result is Result.PDB_BLOCKED:
            log.warning("eviction_refused_by_pdb", causes=list(outcome.causes),
                        retry_after=outcome.retry_after, retry_at=done.retry_at, **fields)
            await self._event(target.pod, Reason.BLOCKED,
                              f"not restarted (pdb): {outcome.message} "
                              f"{'; '.join(outcome.causes)}".strip(), warning=True, now=now)
        elif done.result is Result.FORBIDDEN:
            log.error("remediation_forbidden", **fields)
            self._downgrade(f"{outcome.status}: {outcome.message}")
        elif done.result is Result.NO_ANSWER:
            log.error("remediation_unanswered", consequence="counted as in flight until the "
                      "pod is seen gone (done) or untouched (failed)", **fields)
        else:
            log.warning("remediation_failed", retry_at=done.retry_at, **fields)

    # -- /status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.wall()
        return {
            "configured_mode": self.configured.value,
            "mode": self.rails.mode.value,
            "downgraded": self.downgraded or None,
            "leader": self._leading,
            "identity": self.identity,
            "holder": self.leadership.holder if self.leadership else self.identity,
            "decision": self.decision.as_dict(),
            "budget": budget(self.history, self.rails, now),
            "recoveries": list(self.recoveries),
            "escalated_pods": {w: self.pods_of(w) for w in
                               self.history.escalated_of(self.rails.mode is Mode.DRY_RUN)},
        }


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 1) if start is not None and end is not None else None
