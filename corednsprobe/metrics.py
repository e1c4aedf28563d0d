"""Every Prometheus metric of corednsprobe, in one place.

Owns: metric names (``corednsprobe_*``, base units), their help, bounded label
values (pod names and check names, never IPs), and removing the series of a
target that left. Never does: decide anything; it only mirrors values.

``corednsprobe_target_health{state}`` is 1 for the target's current state
(``unknown``, ``healthy``, ``unhealthy``, ``grace``); the older
``corednsprobe_target_healthy`` (1, 0, or -1 for not judged) is kept for one
release. Counters that alerts take ``increase()`` of are created at 0 as soon
as their labels are known, so their first step is seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from corednsprobe import __version__
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    EndpointState,
    Health,
    HealthState,
    IgnoredReply,
    Outcome,
    ProbeResult,
    RoundReport,
    Target,
    TargetKey,
    TargetKind,
    TargetSet,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HEALTH_VALUE = {HealthState.HEALTHY: 1.0, HealthState.UNHEALTHY: 0.0}

# Label values known before they happen, so each counter starts at 0 (tests keep
# these equal to the remediation's own enums, which this layer may not import).
REMEDIATION_MODES = ("evict", "delete", "dry-run", "off")
ACTION_RESULTS = ("done", "gone", "no_answer", "pdb_blocked", "forbidden", "failed")
BLOCK_REASONS = ("mode_off", "diagnosis_not_pod", "gave_up", "in_flight", "backoff", "cooldown",
                 "hourly_budget", "pod_terminating", "pod_not_ready", "pod_too_young",
                 "min_ready", "confirming", "pod_gone", "pod_not_ours", "not_an_endpoint",
                 "pod_unverified", "internal_error")


VANTAGE_STATES = ("counted", "isolated", "stale")
PULL_RESULTS = ("ok", "failed", "malformed", "wrong_identity")


def rtt_buckets(timeout: float) -> list[float]:
    """0.1 ms up to the timeout, roughly x2.5 apart: where DNS latencies live."""
    edges = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
    return [e for e in edges if e < timeout] + [timeout]


def target_label(t: Target) -> str:
    """The bounded ``pod`` label: the pod's name, a front door's label (one per node or
    LoadBalancer address), or ``service`` (``service-v6``)."""
    if t.label:
        return t.label
    if t.kind is TargetKind.SERVICE:
        return "service-v6" if ":" in t.address else "service"
    return t.name


class _Live(Collector):
    """Values computed at scrape time."""

    def __init__(self, last_event_at: Callable[[], float | None], now: Callable[[], float]) -> None:
        self.last_event_at = last_event_at
        self._now = now

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        info = InfoMetricFamily("corednsprobe_build", "The running corednsprobe.")
        info.add_metric([], {"version": __version__})
        yield info
        age = GaugeMetricFamily(
            "corednsprobe_watch_last_event_age_seconds",
            "Seconds since any API watch delivered an event or bookmark (or a list).",
        )
        last = self.last_event_at()
        age.add_metric([], float("nan") if last is None else max(0.0, self._now() - last))
        yield age


class Metrics:
    def __init__(
        self,
        timeout: float,
        *,
        last_event_at: Callable[[], float | None] = lambda: None,
        now: Callable[[], float] = lambda: 0.0,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.probes = Counter("corednsprobe_probes_total", "DNS probes by outcome.",
                              ["target_kind", "pod", "check", "outcome"], registry=r)
        self.rtt = Histogram("corednsprobe_probe_rtt_seconds",
                             "Round-trip time of answered probes.",
                             ["target_kind", "pod", "check"],
                             buckets=rtt_buckets(timeout), registry=r)
        self.success = Gauge("corednsprobe_probe_success",
                             "1 if the target's latest probe of the check succeeded, else 0.",
                             ["target_kind", "pod", "check"], registry=r)
        self.health = Gauge("corednsprobe_target_health",
                            "1 for the target's current state: unknown (too few samples), "
                            "healthy, unhealthy, grace (not judged).",
                            ["target_kind", "pod", "node", "state"], registry=r)
        self.healthy = Gauge("corednsprobe_target_healthy",
                             "Deprecated, use corednsprobe_target_health: "
                             "1 healthy, 0 unhealthy, -1 not judged (grace or too few samples).",
                             ["target_kind", "pod", "node"], registry=r)
        self.turned_unhealthy = Counter(
            "corednsprobe_target_unhealthy_transitions",
            "Targets judged unhealthy after not being so; kept when the pod leaves.",
            ["target_kind"], registry=r)
        self.ratio = Gauge("corednsprobe_target_failure_ratio",
                           "Share of failed probes in the target's window.",
                           ["target_kind", "pod"], registry=r)
        self.udp_only = Counter("corednsprobe_udp_only_failures_total",
                                "Failures over UDP while the same question over TCP answered.",
                                ["pod"], registry=r)
        self.replies_ignored = Counter(
            "corednsprobe_replies_ignored",
            "Datagrams on a probe's socket not taken as its reply (spoofed or stray), by reason.",
            ["reason"], registry=r)
        self.health_endpoint_ok = Gauge(
            "corednsprobe_health_endpoint_ok",
            "1 if the pod's own health endpoint (from its liveness/readiness httpGet, "
            "e.g. :8080/health) answered 200-399 to the latest GET, else 0: the kubelet's "
            "view beside the DNS verdict.", ["pod", "endpoint"], registry=r)
        self.diagnosis = Gauge("corednsprobe_diagnosis", "1 for the current diagnosis state.",
                               ["state"], registry=r)
        self.candidates = Gauge("corednsprobe_restart_candidates",
                                "Pods the diagnosis names as safe to restart.", registry=r)
        self.rounds = Counter("corednsprobe_rounds_total", "Probe rounds completed.", registry=r)
        self.overruns = Counter("corednsprobe_round_overruns_total",
                                "Rounds that outlasted the interval.", registry=r)
        self.round_duration = Histogram(
            "corednsprobe_round_duration_seconds", "From a round's tick to its last answer.",
            buckets=[0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120], registry=r)
        self.targets = Gauge("corednsprobe_targets", "Targets in the current TargetSet.",
                             ["target_kind"], registry=r)
        self.watch_restarts = Counter("corednsprobe_watch_restarts_total",
                                      "API lists/watches restarted, by reason.",
                                      ["informer", "reason"], registry=r)
        self.api_objects_skipped = Counter(
            "corednsprobe_api_objects_skipped_total",
            "API objects that could not be read into targets, once per object version.",
            ["kind"], registry=r)
        self.remediations = Counter("corednsprobe_remediations",
                                    "Remediation attempts by action and result.",
                                    ["action", "result"], registry=r)
        self.remediation_blocked = Counter(
            "corednsprobe_remediation_blocked",
            "Remediations the rails held back, once per pod and reason in a row.", ["reason"],
            registry=r)
        self.leader = Gauge("corednsprobe_leader",
                            "1 while this replica holds the Lease (only the leader remediates).",
                            registry=r)
        self.last_remediation = Gauge("corednsprobe_last_remediation_timestamp_seconds",
                                      "Unix time of the last remediation that changed something "
                                      "(or would have, in dry-run).", registry=r)
        self.gave_up = Gauge("corednsprobe_gave_up",
                             "1 while a workload is escalated to people (remediation stopped).",
                             ["workload"], registry=r)
        self.mode = Gauge("corednsprobe_remediation_mode",
                          "1 for the configured remediation mode.", ["mode"], registry=r)
        # vantages (judge/vantage.py): several replicas' views combined by the leader
        self.vantages = Gauge("corednsprobe_vantages",
                              "Replicas' views in the last verdict: counted (fresh, this "
                              "replica's own included), isolated (set aside), stale (dropped).",
                              ["state"], registry=r)
        self.path_unhealthy = Gauge(
            "corednsprobe_path_unhealthy",
            "1 while a pod is judged unhealthy from the vantage on from_node and healthy from "
            "others: a broken path, not a sick pod.", ["pod", "from_node"], registry=r)
        self.vantage_pulls = Counter(
            "corednsprobe_vantage_pulls_total",
            "The leader's pulls of a replica's /vantage, by result (ok, failed, malformed, "
            "wrong_identity).", ["result"], registry=r)
        self._paths: set[tuple[str, str]] = set()
        for state in VANTAGE_STATES:
            self.vantages.labels(state).set(0)
        for result in PULL_RESULTS:
            self.vantage_pulls.labels(result)
        self.reach = Gauge("corednsprobe_reach_info",
                           "1 for the reach strategy the probes go through now, 0 for the others.",
                           ["strategy"], registry=r)
        self._live = _Live(last_event_at, now)
        r.register(self._live)
        for state in DiagnosisState:
            self.diagnosis.labels(state.value).set(0)
        for kind in TargetKind:
            self.targets.labels(kind.value).set(0)
            self.turned_unhealthy.labels(kind.value)
        for reason in BLOCK_REASONS:
            self.remediation_blocked.labels(reason)
        for reason in IgnoredReply:
            self.replies_ignored.labels(reason.value)
        self._labelled: dict[TargetKey, Target] = {}
        self._states: dict[TargetKey, tuple[HealthState, str]] = {}
        self._escalated: set[str] = set()
        self._shown: set[str] = set()
        self._present: set[str] = set()
        self._endpoints: dict[TargetKey, frozenset[str]] = {}  # endpoint labels shown per pod
        # children per target: labels() takes a lock and checks its values on every call
        self._children: dict[TargetKey, dict[tuple[str, Outcome], Counter]] = {}
        self._per_check: dict[TargetKey, dict[str, tuple[Gauge, Histogram]]] = {}
        self._health_children: dict[TargetKey, tuple[dict[HealthState, Gauge], Gauge, Gauge]] = {}

    def set_remediation_mode(self, mode: str) -> None:
        """The configured mode; its restart action's counters start at 0."""
        for m in REMEDIATION_MODES:
            self.mode.labels(m).set(1 if m == mode else 0)
        if mode in ("evict", "delete"):
            for result in ACTION_RESULTS:
                self.remediations.labels(mode, result)
        if mode != "off":  # a missing permission downgrades to dry-run
            self.remediations.labels("dry-run", "dry_run")

    def set_reach(self, chosen: str, strategies: Iterable[str]) -> None:
        """The strategy in use (1) among all of them (0)."""
        for strategy in strategies:
            self.reach.labels(strategy).set(1 if strategy == chosen else 0)

    def follow_watches(self, last_event_at: Callable[[], float | None]) -> None:
        """Where the watch-age gauge reads the time of the API's last event from."""
        self._live.last_event_at = last_event_at

    def observe(self, result: ProbeResult) -> None:
        t = result.target
        key = t.key
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = {}
            self._labelled.setdefault(key, t)
        check, outcome = result.check.name, result.outcome
        probes = children.get((check, outcome))
        if probes is None:
            probes = children[check, outcome] = self.probes.labels(
                t.kind.value, target_label(t), check, outcome.value)
        probes.inc()
        if outcome is Outcome.TUNNEL:
            return  # no probe reached the target: its success and RTT stay as they were
        per_check = self._per_check.get(key)
        if per_check is None:
            per_check = self._per_check[key] = {}
        pair = per_check.get(check)
        if pair is None:
            label = target_label(t)
            pair = per_check[check] = (self.success.labels(t.kind.value, label, check),
                                       self.rtt.labels(t.kind.value, label, check))
        pair[0].set(1 if outcome is Outcome.OK else 0)
        if result.rtt_seconds is not None and result.rcode is not None:  # answered
            pair[1].observe(result.rtt_seconds)
        if result.udp_only:
            self.udp_only.labels(target_label(t)).inc()

    def set_targets(self, ts: TargetSet) -> None:
        """Mirror the TargetSet and drop every series of targets that left."""
        self.targets.labels(TargetKind.POD.value).set(len(ts.pods))
        self.targets.labels(TargetKind.SERVICE.value).set(len(ts.services))
        current = {t.key for t in ts.targets}
        for key in [k for k in self._labelled if k not in current]:
            self._states.pop(key, None)
            self._forget(self._labelled.pop(key))
        for t in ts.targets:
            self.udp_only.labels(target_label(t))  # from 0, so increase() sees the first
            self._labelled.setdefault(t.key, t)
        self._present = {t.pod.workload_key for t in ts.pods if t.pod is not None}
        self._show_gave_up(self._present | self._escalated)  # a workload whose pods left goes

    def _forget(self, t: Target) -> None:
        self._children.pop(t.key, None)
        self._per_check.pop(t.key, None)
        self._health_children.pop(t.key, None)
        label = target_label(t)
        for metric in (self.probes, self.healthy, self.health, self.ratio, self.rtt,
                       self.success):
            metric.remove_by_labels({"target_kind": t.kind.value, "pod": label})
        self.udp_only.remove_by_labels({"pod": label})
        self.health_endpoint_ok.remove_by_labels({"pod": label})
        self._endpoints.pop(t.key, None)

    def set_health(self, healths: Mapping[TargetKey, Health]) -> None:
        for key, h in healths.items():
            t = h.target
            node = t.pod.node if t.pod else ""
            label = target_label(t)
            before = self._states.get(key)
            children = self._health_children.get(key)
            if before is not None and before[1] != node:  # a node learned late: one series
                self.health.remove_by_labels({"target_kind": t.kind.value, "pod": label})
                self.healthy.remove_by_labels({"target_kind": t.kind.value, "pod": label})
                children = None
            if h.state is HealthState.UNHEALTHY and (before is None
                                                     or before[0] is not HealthState.UNHEALTHY):
                self.turned_unhealthy.labels(t.kind.value).inc()
            self._states[key] = (h.state, node)
            if children is None:
                children = self._health_children[key] = (
                    {state: self.health.labels(t.kind.value, label, node, state.value)
                     for state in HealthState},
                    self.healthy.labels(t.kind.value, label, node),
                    self.ratio.labels(t.kind.value, label))
                before = None
            if before is None or before[0] is not h.state:  # the state gauges change with it
                for state, child in children[0].items():
                    child.set(1 if state is h.state else 0)
                children[1].set(_HEALTH_VALUE.get(h.state, -1.0))
            children[2].set(h.ratio)
            self._labelled.setdefault(key, t)

    def set_health_endpoints(self, states: Mapping[TargetKey, tuple[EndpointState, ...]]) -> None:
        """The latest GET of each pod's health endpoints; a pod that left is forgotten by
        ``set_targets``, an endpoint no longer in a pod's spec here."""
        for key, pod_states in states.items():
            t = self._labelled.get(key)
            if t is None:
                continue  # not (or no longer) a current target: no series to revive
            label = target_label(t)
            shown = frozenset(s.endpoint.label for s in pod_states)
            for gone in self._endpoints.get(key, frozenset()) - shown:
                self.health_endpoint_ok.remove(label, gone)
            self._endpoints[key] = shown
            for s in pod_states:
                self.health_endpoint_ok.labels(label, s.endpoint.label).set(1 if s.ok else 0)

    def set_gave_up(self, escalated: Iterable[str], present: Iterable[str] | None = None) -> None:
        """1 for each escalated workload, 0 for the others of the current pods.

        ``present``, when given, is the workloads of the pods the caller sees now
        (set_targets learns them too); a lifted escalation stays shown, at 0.
        """
        self._escalated = set(escalated)
        if present is not None:
            self._present = {w for w in present if w}
        self._show_gave_up(self._present | self._escalated)

    def _show_gave_up(self, shown: set[str]) -> None:
        for w in self._shown - shown:
            self.gave_up.remove(w)
        for w in shown:
            self.gave_up.labels(w).set(1 if w in self._escalated else 0)
        self._shown = shown

    def set_diagnosis(self, d: Diagnosis) -> None:
        for state in DiagnosisState:
            self.diagnosis.labels(state.value).set(1 if state is d.state else 0)
        self.candidates.set(len(d.candidates))

    def round_done(self, report: RoundReport) -> None:
        self.rounds.inc()
        self.round_duration.observe(report.duration)
        if report.overrun:
            self.overruns.inc()

    def reply_ignored(self, reason: IgnoredReply) -> None:
        self.replies_ignored.labels(reason.value).inc()

    def watch_restarted(self, informer: str, reason: str) -> None:
        self.watch_restarts.labels(informer, reason).inc()

    def object_skipped(self, kind: str) -> None:
        self.api_objects_skipped.labels(kind).inc()

    def set_vantages(self, counted: int, isolated: int, stale: int,
                     paths: Iterable[tuple[str, str]]) -> None:
        """The vantages of the last verdict, and one series per (pod, from_node) path
        found; a path no longer found loses its series."""
        for state, n in zip(VANTAGE_STATES, (counted, isolated, stale), strict=True):
            self.vantages.labels(state).set(n)
        now = set(paths)
        for gone in self._paths - now:
            self.path_unhealthy.remove(*gone)
        for path in now:
            self.path_unhealthy.labels(*path).set(1)
        self._paths = now

    def vantage_pulled(self, result: str) -> None:
        self.vantage_pulls.labels(result).inc()

    def remediation_attempted(self, action: str, result: str, at: float | None) -> None:
        self.remediations.labels(action, result).inc()
        if at is not None:
            self.last_remediation.set(at)

    def remediation_blocked_by(self, reason: str) -> None:
        self.remediation_blocked.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def names(self) -> list[str]:
        """Every metric family name as a scraper reads it (counters without _total)."""
        from prometheus_client.parser import text_string_to_metric_families

        return sorted({f.name for f in text_string_to_metric_families(self.render().decode())})
