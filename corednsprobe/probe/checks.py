"""The check catalogue: which questions each target is asked, built from the settings.

Owns: the checks a pod or the Service gets (A or AAAA by the families the
truth says the cluster serves, the NXDOMAIN canary, the optional upstream
name, the Service's application view) and a fresh canary name per probe so
that no cache can answer it.
Never does: send a query or judge an answer.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass

from corednsprobe.model import Check, Target, TargetKind


@dataclass(frozen=True, slots=True)
class Checks:
    """The questions every round asks, built from the settings and the truth."""

    domain: str
    namespace: str
    external_name: str = ""

    def for_target(self, target: Target, expected: frozenset[str]) -> tuple[Check, ...]:
        return _checks(self, target.kind is TargetKind.SERVICE, expected)

    @property
    def canary_zone(self) -> str:
        return f"{self.namespace}.svc.{self.domain}."

    def qname(self, check: Check) -> str | None:
        """A fresh name for the NXDOMAIN canary so no cache can answer it."""
        if check.name == "nxdomain":
            return f"corednsprobe-{secrets.token_hex(6)}.{self.canary_zone}"
        return None


@functools.lru_cache(maxsize=16)
def _checks(c: Checks, service: bool, expected: frozenset[str]) -> tuple[Check, ...]:
    """The checks for a pod or the Service; the truth decides A or AAAA.

    default/kubernetes's ClusterIPs say which families the cluster serves:
    each family present gets its own question (A for IPv4, AAAA for IPv6), so
    an IPv6-only cluster is asked AAAA instead of failing every probe with
    NODATA. With no truth yet, any A answer is accepted.
    """
    d = c.domain
    v4 = frozenset(a for a in expected if ":" not in a)
    v6 = expected - v4
    name = f"kubernetes.default.svc.{d}."
    checks = []
    if v4 or not v6:
        checks.append(Check("kubernetes", name, "A", v4 or None))
    if v6:
        checks.append(Check("kubernetes_aaaa", name, "AAAA", v6))
    checks.append(Check("nxdomain", c.canary_zone, "A", None, "NXDOMAIN"))
    if c.external_name:
        checks.append(Check("external", f"{c.external_name}.", "A", upstream=True))
    if service:
        qtype, want = ("A", v4 or None) if v4 or not v6 else ("AAAA", v6)
        checks.append(Check("app_view", "kubernetes.default", qtype, want,
                            search=(f"default.svc.{d}", f"svc.{d}", d), ndots=5,
                            application_view=True))
    return tuple(checks)
