"""What the service says about itself: the /status document, liveness and readiness.

Owns: the shape of /status (the TargetSet, each target's window and last
results, its pod's health endpoints as last asked (the kubelet's view), the
diagnosis, round counts, the settings, and extra sections such
as remediation), the liveness rule behind /healthz and the readiness rule
behind /readyz.
Never does: probe, judge or serve HTTP; it reads what the prober service knows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from corednsprobe.model import HealthState, Target
from corednsprobe.service.prober import ProberService, loop_time
from corednsprobe.stats import failure_lower_bound

Section = Callable[[], Any]


class StatusPage:
    """/status, /healthz and /readyz of one prober service.

    ``sections`` maps a /status key to a callable adding a section (remediation).
    """

    def __init__(self, service: ProberService, sections: Mapping[str, Section] | None = None):
        self.service = service
        self.sections = dict(sections or {})

    def ready(self) -> bool:
        """True once the first list of targets arrived."""
        return self.service.view.current.generation > 0

    def live(self) -> bool:
        """False when rounds stopped completing (the loop or the schedule is stuck).

        Waiting for the API's first list is not being stuck: /readyz says that,
        and restarting the prober would not bring the API back.
        """
        st = self.service.state
        if st.started is None:
            return True
        s = self.service.settings
        grace = 3 * s.interval + 2 * s.timeout + 5
        last = st.last_round_end or st.started
        return loop_time() - last < grace

    def document(self) -> dict[str, Any]:
        """The /status document."""
        st = self.service.state
        doc: dict[str, Any] = {
            "targets_state": st.targets.state.value,
            "generation": st.targets.generation,
            "expected": sorted(st.targets.expected),
            "diagnosis": {
                "state": st.diagnosis.state.value,
                "reason": st.diagnosis.reason,
                "candidates": [t.name for t in st.diagnosis.candidates],
                "evidence": st.diagnosis.evidence.as_dict() if st.diagnosis.evidence else {},
            },
            "targets": [self._target(t) for t in st.targets.targets],
            "rounds": {
                "completed": st.rounds,
                "overruns": st.overruns,
                "last_duration_seconds": st.last_round.duration if st.last_round else None,
            },
            "settings": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in self.service.settings.as_dict().items()},
        }
        for key, section in self.sections.items():
            doc[key] = section()
        return doc

    def _target(self, t: Target) -> dict[str, Any]:
        st = self.service.state
        h = st.healths.get(t.key)
        return {
            "name": t.name, "kind": t.kind.value, "address": t.address, "port": t.port,
            "node": t.pod.node if t.pod else None,
            "health": h.state.value if h else HealthState.UNKNOWN.value,
            "window": {
                "seconds": self.service.settings.window,
                "samples": h.samples if h else 0,
                "failures": h.failures if h else 0,
                "failure_ratio": round(h.ratio, 4) if h else 0.0,
                "failure_ratio_lower_bound": (
                    round(failure_lower_bound(h.failures, h.samples), 4) if h else 0.0),
                "udp_only": h.udp_only if h else 0,
                "outcomes": dict(h.outcomes) if h else {},
            },
            "grace_reason": h.grace_reason if h else "",
            "health_endpoints": [
                {"probe": e.endpoint.probe, "endpoint": e.endpoint.label,
                 "scheme": e.endpoint.scheme, "host": e.endpoint.host or t.address,
                 "outcome": e.outcome.value, "status": e.status, "ok": e.ok, "at": e.at,
                 "detail": e.detail}
                for e in st.endpoints.get(t.key, ())
            ],
            "last": [
                {"check": r.check.name, "outcome": r.outcome.value, "rcode": r.rcode,
                 "rtt_seconds": r.rtt_seconds, "udp_only": r.udp_only, "at": r.at,
                 "answers": list(r.answers), "detail": r.detail, "reach": r.reach}
                for r in st.last.get(t.key, ())
            ],
        }
