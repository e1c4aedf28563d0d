"""Tracker: judges each target over a sliding, time-bounded window of outcomes.

Owns: per-target windows, the failure ratio with a minimum sample count, the
judgement of each check on its own, the hysteresis of recovery, forgetting
targets that left. Never does: I/O or reading a clock — ``now`` is always
passed in.

A target is unhealthy when, over the last ``window`` seconds, at least
``min_samples`` outcomes were seen and we are 95% sure that at least
``failure_ratio`` of its probes fail: the one-sided Wilson lower bound of the
failure share reaches the ratio. The plain share would flap: with 30% packet
loss, 12 or more failures out of 24 happen about 3% of the time, so a lossy
but working pod would be called unhealthy several times a day. The bound
needs 5 of 5, 9 of 12 or 17 of 24 failures for the default 0.5; a dead pod is
still caught after ``min_samples`` probes.

Each check is also judged on its own outcomes, so that one wholly failing
check (a wrong address for ``kubernetes.default.svc`` on every probe) is not
diluted by another that passes (the NXDOMAIN canary): the target is unhealthy
when any check has ``min_samples`` outcomes and its lower bound at 99%
confidence reaches the ratio (6 of 6 or 11 of 12 for 0.5). A check's window
holds half as many outcomes as the target's, and at 95% a 30%-lossy pod
would reach 9 of 12 on one of two checks dozens of times a day (measured:
about 27 episodes a day at the defaults, against under one for the pooled
window); at 99% it is under one a day as well.

Once unhealthy a target stays so until ``recovery_successes`` outcomes in a
row are ok (over all its checks); recovery then starts a fresh window, so that
the failures that made it unhealthy cannot at once make it unhealthy again.
A probe whose port-forward tunnel could not open (Outcome.TUNNEL: the API server
or the kubelet failed, not the target) is no sample: it is counted apart, in
``Health.tunnel_failures``, and never counts against it; a target whose window
holds nothing but such probes is unknown (no sight of it), whatever it was before.

Pods in grace (``judge.eligibility``) have no outcomes recorded and are never
judged. Failures of upstream checks (an external name) are kept apart: they
say nothing about the pod itself.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from corednsprobe.judge.eligibility import pod_grace
from corednsprobe.model import (
    CheckWindow,
    Health,
    HealthState,
    Outcome,
    ProbeResult,
    Target,
    TargetKey,
)
from corednsprobe.stats import Z_CHECK, failure_lower_bound


@dataclass(frozen=True, slots=True)
class Thresholds:
    window: float = 60.0
    failure_ratio: float = 0.5
    min_samples: int = 5
    recovery_successes: int = 3
    min_pod_age: float = 30.0


class _Kind:
    """What a sample says apart from its time; the same few kinds recur (a check, an
    outcome, udp_only, upstream), so each is made once and samples hold its number."""

    __slots__ = ("check", "ok", "outcome", "udp_only", "upstream")

    def __init__(self, ok: bool, outcome: str, udp_only: bool, upstream: bool,
                 check: str) -> None:
        self.ok = ok
        self.outcome = outcome
        self.udp_only = udp_only
        self.upstream = upstream
        self.check = check


_KINDS: list[_Kind] = []
_KIND_NUMBERS: dict[tuple[bool, str, bool, bool, str], int] = {}


def _kind_number(ok: bool, outcome: str, udp_only: bool, upstream: bool, check: str) -> int:
    key = (ok, outcome, udp_only, upstream, check)
    number = _KIND_NUMBERS.get(key)
    if number is None:
        number = _KIND_NUMBERS[key] = len(_KINDS)
        _KINDS.append(_Kind(ok, outcome, udp_only, upstream, check))
    return number


class _Window:
    """A target's samples and running counts of them, updated in O(1) per sample added
    or expired (judging a target no longer walks its window).

    The samples are two flat arrays, their times and their kinds' numbers, read from
    ``head`` on (expired ones are cut off in batches): 12 bytes a sample instead of an
    object of ~90 (5,000 pods hold 600,000 samples in a 60 s window at a 1 s interval).
    """

    __slots__ = ("checks", "codes", "failures", "head", "health", "outcomes", "since",
                 "state", "streak", "times", "tunnel", "tunnel_detail", "udp_only",
                 "up_failures", "up_samples")

    def __init__(self, since: float = 0.0) -> None:
        self.health: Health | None = None  # the last judgement, handed out again while it holds
        self.state = HealthState.UNKNOWN
        self.since = since
        self.streak = 0  # consecutive ok outcomes (non-upstream)
        self.tunnel: deque[float] = deque()  # when a tunnel could not open: not samples
        self.tunnel_detail = ""
        self.clear()

    def clear(self) -> None:
        self.times = array("d")
        self.codes = array("I")
        self.head = 0  # samples before it have expired
        self.failures = 0  # of own (non-upstream) samples
        self.udp_only = 0
        self.outcomes: dict[str, int] = {}
        self.checks: dict[str, list[int]] = {}  # check → [samples, failures]
        self.up_samples = 0
        self.up_failures = 0

    def add(self, at: float, code: int) -> None:
        self.times.append(at)
        self.codes.append(code)
        self._count(_KINDS[code], 1)

    def expire(self, horizon: float) -> None:
        tunnel = self.tunnel
        while tunnel and tunnel[0] <= horizon:
            tunnel.popleft()
        times, codes = self.times, self.codes
        i, n = self.head, len(times)
        while i < n and times[i] <= horizon:
            self._count(_KINDS[codes[i]], -1)
            i += 1
        if i > 64 and 2 * i > n:  # cut the expired part off once it is half the arrays
            del times[:i]
            del codes[:i]
            i = 0
        self.head = i

    def _count(self, s: _Kind, d: int) -> None:
        if s.upstream:
            self.up_samples += d
            if not s.ok:
                self.up_failures += d
            return
        outcomes = self.outcomes
        n = outcomes.get(s.outcome, 0) + d
        if n:
            outcomes[s.outcome] = n
        else:
            del outcomes[s.outcome]
        counts = self.checks.get(s.check)
        if counts is None:
            counts = self.checks[s.check] = [0, 0]
        counts[0] += d
        if not s.ok:
            self.failures += d
            counts[1] += d
        if s.udp_only:
            self.udp_only += d
        if not counts[0]:
            del self.checks[s.check]

    @property
    def own(self) -> int:
        return len(self.times) - self.head - self.up_samples

    def check_windows(self) -> tuple[CheckWindow, ...]:
        return tuple(CheckWindow(name, n, f) for name, (n, f) in sorted(self.checks.items()))


def grace_reason(target: Target, now: float, min_pod_age: float) -> str:
    """Why a pod must not be judged now, or "" when it may be (a Service always may)."""
    grace = pod_grace(target.pod, now, min_pod_age) if target.pod is not None else None
    return grace.reason.value if grace is not None else ""


class Tracker:
    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._windows: dict[TargetKey, _Window] = {}

    def record(self, result: ProbeResult, now: float) -> None:
        """Add one outcome; outcomes of targets in grace are not kept."""
        if grace_reason(result.target, now, self.thresholds.min_pod_age):
            return
        key = result.target.key
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(since=now)
        if result.outcome is Outcome.TUNNEL:  # the path failed, not the target
            w.tunnel.append(result.at or now)
            w.tunnel_detail = result.detail
            return
        upstream = result.check.upstream
        ok = result.outcome is Outcome.OK
        w.add(result.at or now, _kind_number(ok, result.outcome.value, result.udp_only, upstream,
                                             result.check.name))
        if not upstream:
            w.streak = w.streak + 1 if ok else 0

    def evaluate(self, targets: Iterable[Target], now: float) -> dict[TargetKey, Health]:
        """Judge every target now; forget windows of targets no longer given."""
        present = {t.key: t for t in targets}
        for key in list(self._windows):
            if key not in present:
                del self._windows[key]
        return {key: self._judge(t, now, key) for key, t in present.items()}

    def _judge(self, target: Target, now: float, key: TargetKey) -> Health:
        reason = grace_reason(target, now, self.thresholds.min_pod_age)
        if reason:
            self._windows.pop(key, None)  # judge anew once grace ends
            return Health(target, HealthState.GRACE, since=now, grace_reason=reason)
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(since=now)
        w.expire(now - self.thresholds.window)
        if w.tunnel and not w.own:
            state = HealthState.UNKNOWN  # nothing but closed tunnels: no sight of it at all
        else:
            state = self._next_state(w, w.own, w.failures)
        if state is not w.state:
            if w.state is HealthState.UNHEALTHY:
                w.clear()  # recovered: judge anew from here
            w.state, w.since = state, now
        last = w.health
        if last is not None and _unchanged(last, target, w):
            return last
        w.health = health = _health(target, w)
        return health

    def _next_state(self, w: _Window, samples: int, failures: int) -> HealthState:
        t = self.thresholds
        if w.state is HealthState.UNHEALTHY:
            return HealthState.HEALTHY if w.streak >= t.recovery_successes else w.state
        # no failure, no lower bound above 0 (and every ratio is above 0): no arithmetic
        if (failures and samples >= t.min_samples
                and failure_lower_bound(failures, samples) >= t.failure_ratio):
            return HealthState.UNHEALTHY
        if failures and any(n >= t.min_samples and f
                            and failure_lower_bound(f, n, Z_CHECK) >= t.failure_ratio
                            for n, f in w.checks.values()):
            return HealthState.UNHEALTHY
        if samples >= t.min_samples or w.state is HealthState.HEALTHY:
            return HealthState.HEALTHY
        return HealthState.UNKNOWN


def _unchanged(last: Health, target: Target, w: _Window) -> bool:
    """Whether ``last`` still says exactly what the window says (so the same object
    serves): same target, state and counts, and no failure in either, so that every
    outcome is ``ok`` and the outcome counts follow from the sample count."""
    if not (last.target is target and last.state is w.state and last.since == w.since
            and w.failures == 0 and last.failures == 0 and last.samples == w.own
            and last.udp_only == w.udp_only and last.upstream_samples == w.up_samples
            and last.upstream_failures == w.up_failures and len(last.checks) == len(w.checks)
            and last.tunnel_failures == len(w.tunnel)
            and last.tunnel_detail == (w.tunnel_detail if w.tunnel else "")):
        return False
    checks = w.checks
    for c in last.checks:
        counts = checks.get(c.check)
        if counts is None or counts[0] != c.samples or counts[1] != c.failures:
            return False
    return True


def _health(target: Target, w: _Window) -> Health:
    return Health(
        target,
        w.state,
        samples=w.own,
        failures=w.failures,
        udp_only=w.udp_only,
        outcomes=tuple(sorted(w.outcomes.items())),
        upstream_samples=w.up_samples,
        upstream_failures=w.up_failures,
        since=w.since,
        checks=w.check_windows(),
        tunnel_failures=len(w.tunnel),
        tunnel_detail=w.tunnel_detail if w.tunnel else "",
    )
