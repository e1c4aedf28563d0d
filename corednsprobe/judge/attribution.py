"""Attribution: judging pods from answers that came through a shared front door.

Owns: the window of probes sent to a NodePort or LoadBalancer address (each
with the pods that address could have handed it to, and the pod that named
itself in the answer's EDNS NSID), turning it into one :class:`Health` per pod,
and the arithmetic behind naming a pod that stopped answering.
Never does: I/O, reading a clock (``now`` is passed in), or decide a restart
(judge.diagnose does, from these Healths, with its usual rules).

A probe is *named* to a pod when its answer carries that pod's NSID, or when
the address could reach that pod alone (``externalTrafficPolicy: Local`` on a
node with one DNS pod): such outcomes judge the pod as the tracker judges a pod
probed directly (the same thresholds and confidence bounds).

A pod that does not answer leaves no name behind, so it is named by its
absence. If each probe goes to one of the ``n`` ready pods behind the address
uniformly and independently (kube-proxy's iptables and nftables modes pick at
random per connection, IPVS round-robin is even more regular, and every probe
comes from a fresh source port), the chance that a healthy pod is absent from
``k`` answers is ``((n-1)/n)^k`` (the product of ``1 - 1/n_i`` when ``n``
changed over the window). A ready pod is *absent* (unhealthy) only when

* not one answer since its last named one (or since it became eligible) named
  it, and no answer came without a name (a pod without NSID could be it);
* that chance is at most :data:`MISS_BOUND` (1e-6): 20 answers with two pods,
  35 with three, 132 with ten;
* the path failed at about its share: some probes went unanswered, and the
  95% Wilson upper bound of the unanswered share reaches the pod's expected
  share ``1/n`` (a pod routed late, with every probe answered by the others,
  is never named).

So a healthy pod becomes a candidate by chance at most once in a million
judgements, before the diagnosis asks for a confidently healthy peer and the
remediation for its confirmation period on top. Session affinity or
topology-aware routing break the uniform choice; the exposed strategy does not
attribute by absence then (reach.exposed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from corednsprobe.judge.eligibility import pod_grace
from corednsprobe.judge.tracker import Thresholds
from corednsprobe.model import CheckWindow, Health, HealthState, Outcome, Target, TargetKey
from corednsprobe.stats import Z_CHECK, failure_lower_bound, failure_upper_bound

MISS_BOUND = 1e-6  # the most a healthy ready pod may be named absent by chance, per judgement
UNANSWERED = frozenset({Outcome.TIMEOUT.value, Outcome.UNREACHABLE.value, Outcome.ERROR.value})


def miss_probability(pods: Iterable[int]) -> float:
    """The chance a healthy pod is named in none of these answers, one entry per answer
    giving the number of pods it could have come from: the product of ``1 - 1/n``."""
    log = 0.0
    for n in pods:
        if n <= 1:
            return 0.0
        log += math.log1p(-1.0 / n)
    return math.exp(log)


def answers_needed(pods: int, bound: float = MISS_BOUND) -> int:
    """The fewest answers from ``pods`` pods that make ``((n-1)/n)^k <= bound``."""
    if pods <= 1:
        return 1
    k = math.ceil(math.log(bound) / math.log1p(-1.0 / pods))
    while k > 1 and miss_probability([pods] * (k - 1)) <= bound:  # floating-point edge
        k -= 1
    while miss_probability([pods] * k) > bound:
        k += 1
    return k


@dataclass(frozen=True, slots=True)
class Sighting:
    """One probe through a front door, as attribution sees it."""

    at: float  # unix seconds the probe was sent
    reachable: tuple[str, ...]  # the ready pods the address could hand it to (names)
    nsid: str  # the pod that named itself in the answer; "" for none
    outcome: str  # Outcome value
    check: str  # Check.name
    udp_only: bool = False

    @property
    def answered(self) -> bool:
        return self.outcome not in UNANSWERED


@dataclass(frozen=True, slots=True)
class Absence:
    """The numbers behind naming (or not naming) a pod by its absence."""

    pods: int  # most pods the answers could have come from
    answers: int  # answers that named another pod
    anonymous: int  # answers that named no pod
    unanswered: int  # probes of its path that got no answer
    probes: int  # probes of its path (answers + anonymous + unanswered)
    miss: float  # the chance a healthy pod is absent from that many answers
    share: float  # its expected share of the probes (mean 1/n)
    absent: bool  # named by its absence

    def describe(self, bound: float = MISS_BOUND) -> str:
        """One line for the evidence, e.g. ``named in 0 of 40 answers from 3 pods:
        P(healthy and unseen) = (2/3)^40 = 9.0e-08 <= 1e-06; 19 of 59 probes
        unanswered (its share 1/3)``."""
        n = self.pods
        power = f"({n - 1}/{n})^{self.answers}" if n > 1 else "0"
        said = (f"named in 0 of {self.answers} answers from {n} pods: P(healthy and unseen) = "
                f"{power} = {self.miss:.1e} {'<=' if self.miss <= bound else '>'} {bound:g}; "
                f"{self.unanswered} of {self.probes} probes unanswered (its share "
                f"{self.share:.2f})")
        if self.anonymous:
            said += f"; {self.anonymous} answers carried no NSID"
        return said


def absence(sightings: Iterable[Sighting], pod: str, bound: float = MISS_BOUND) -> Absence:
    """Whether ``pod`` is absent from ``sightings`` (those of its path that did not
    name it), with the numbers (module docs)."""
    shares: list[int] = []
    anonymous = unanswered = probes = 0
    expected = 0.0
    most = 0
    for s in sightings:
        n = len(s.reachable)
        if n < 2 or pod not in s.reachable or s.nsid == pod:
            continue
        probes += 1
        expected += 1.0 / n
        most = max(most, n)
        if not s.answered:
            unanswered += 1
        elif s.nsid:
            shares.append(n)
        else:
            anonymous += 1
    miss = miss_probability(shares) if shares else 1.0
    share = expected / probes if probes else 0.0
    absent = (not anonymous and miss <= bound and unanswered > 0
              and failure_upper_bound(unanswered, probes) >= share)
    return Absence(most, len(shares), anonymous, unanswered, probes, miss, share, absent)


class Attribution:
    """A window of sightings and the Health of each pod judged from it."""

    def __init__(self, thresholds: Thresholds, bound: float = MISS_BOUND) -> None:
        self.thresholds = thresholds
        self.bound = bound
        self._window: deque[Sighting] = deque()
        self._eligible_since: dict[TargetKey, float] = {}
        self._states: dict[TargetKey, tuple[HealthState, float]] = {}
        self.last: dict[str, Absence] = {}  # per pod name, as last judged (for /status)

    def record(self, sighting: Sighting) -> None:
        self._window.append(sighting)

    def evaluate(self, pods: Iterable[Target], now: float) -> dict[TargetKey, Health]:
        """Judge every pod now from the sightings of the window; forget pods not given."""
        t = self.thresholds
        window = self._window
        while window and window[0].at <= now - t.window:
            window.popleft()
        present = {p.key: p for p in pods if p.pod is not None}
        for gone in [k for k in self._eligible_since if k not in present]:
            del self._eligible_since[gone]
            self._states.pop(gone, None)
        self.last = {}
        return {key: self._judge(target, now) for key, target in present.items()}

    def _judge(self, target: Target, now: float) -> Health:
        assert target.pod is not None
        grace = pod_grace(target.pod, now, self.thresholds.min_pod_age)
        if grace is not None:
            self._eligible_since.pop(target.key, None)
            self._states.pop(target.key, None)
            return Health(target, HealthState.GRACE, since=now, grace_reason=grace.reason.value)
        since = self._eligible_since.setdefault(target.key, now)
        name = target.pod.name
        seen = [s for s in self._window if s.at >= since]
        named = [s for s in seen if s.nsid == name or (not s.nsid and s.reachable == (name,))]
        last_named = max((s.at for s in named), default=since)
        gone = absence((s for s in seen if s.at > last_named), name, self.bound)
        self.last[name] = gone
        if gone.absent:  # its evidence: the unanswered probes of its path since its last answer
            missing = [s for s in seen if s.at > last_named and not s.answered
                       and name in s.reachable]
            return self._health(target, now, HealthState.UNHEALTHY, missing, (),
                                gone.describe(self.bound))
        checks: dict[str, list[int]] = {}
        for s in named:
            counts = checks.setdefault(s.check, [0, 0])
            counts[0] += 1
            counts[1] += s.outcome != Outcome.OK.value
        windows = tuple(CheckWindow(c, n, f) for c, (n, f) in sorted(checks.items()))
        failures = sum(w.failures for w in windows)
        state = self._state(len(named), failures, windows)
        said = (f"named in {len(named)} answers (its NSID, or the only pod behind the address)"
                if named else gone.describe(self.bound))
        return self._health(target, now, state, named, windows, said)

    def _health(self, target: Target, now: float, state: HealthState,
                sightings: list[Sighting], windows: tuple[CheckWindow, ...],
                attribution: str) -> Health:
        outcomes: dict[str, int] = {}
        for s in sightings:
            outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
        failed = [s for s in sightings if s.outcome != Outcome.OK.value]
        old = self._states.get(target.key)
        at = old[1] if old is not None and old[0] is state else now
        self._states[target.key] = (state, at)
        return Health(target, state, samples=len(sightings), failures=len(failed),
                      udp_only=sum(s.udp_only for s in failed),
                      outcomes=tuple(sorted(outcomes.items())), since=at, checks=windows,
                      attribution=attribution)

    def _state(self, samples: int, failures: int, windows: tuple[CheckWindow, ...]
               ) -> HealthState:
        """The tracker's rule (judge.tracker) on the outcomes named to the pod."""
        t = self.thresholds
        if samples >= t.min_samples and failure_lower_bound(failures, samples) >= t.failure_ratio:
            return HealthState.UNHEALTHY
        if any(w.samples >= t.min_samples
               and failure_lower_bound(w.failures, w.samples, Z_CHECK) >= t.failure_ratio
               for w in windows):
            return HealthState.UNHEALTHY
        return HealthState.HEALTHY if samples >= t.min_samples else HealthState.UNKNOWN
