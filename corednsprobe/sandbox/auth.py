"""Who is calling and what they may do: bearer tokens and RBAC rules.

Owns: the token table (token → user and rules; ServiceAccount tokens resolve
through the RBAC objects on every request), deny rules injected as faults,
the authorization decision with the real ``RuleAllows`` matching (verbs, API
groups, ``res/sub`` and ``*/sub`` resources, resourceNames), the record of
the resource requests decided (what a client really asked for), and the 403
wording of the real authorizer. Never does: HTTP. The same decision answers requests and
SelfSubjectAccessReviews, so the review tells the truth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rule:
    """Like an RBAC PolicyRule; ``*`` matches anything. ``resources`` may name
    subresources (``pods/eviction``). ``namespaces`` None means every namespace."""

    verbs: frozenset[str]
    resources: frozenset[str]
    api_groups: frozenset[str] = frozenset({"*"})
    resource_names: frozenset[str] = frozenset()
    namespaces: frozenset[str] | None = None

    @classmethod
    def of(cls, verbs: Iterable[str], resources: Iterable[str],
           api_groups: Iterable[str] = ("*",), resource_names: Iterable[str] = (),
           namespaces: Iterable[str] | None = None) -> Rule:
        return cls(frozenset(verbs), frozenset(resources), frozenset(api_groups),
                   frozenset(resource_names),
                   None if namespaces is None else frozenset(namespaces))

    @classmethod
    def from_json(cls, data: Obj) -> Rule:
        return cls.of(data.get("verbs", ()), data.get("resources", ()),
                      data.get("apiGroups", ("*",)), data.get("resourceNames", ()),
                      data.get("namespaces"))

    def allows(self, attrs: Attributes) -> bool:
        def hit(allowed: frozenset[str], value: str) -> bool:
            return "*" in allowed or value in allowed

        return (hit(self.verbs, attrs.verb)
                and hit(self.api_groups, attrs.group)
                and self._resource_matches(attrs)
                and (not self.resource_names or attrs.name in self.resource_names)
                and (self.namespaces is None or attrs.namespace in self.namespaces))

    def _resource_matches(self, attrs: Attributes) -> bool:
        """ResourceMatches (pkg/apis/rbac/v1/evaluation_helpers.go): ``*``, the exact
        ``res`` or ``res/sub``, or ``*/sub``; ``pods`` does not cover ``pods/log``."""
        wanted = attrs.resource_path
        for allowed in self.resources:
            if allowed in ("*", wanted):
                return True
            if attrs.subresource and allowed == f"*/{attrs.subresource}":
                return True
        return False


ADMIN_RULES = (Rule.of(["*"], ["*"]),)


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request asks to do (authorizer.Attributes)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(slots=True)
class Principal:
    user: str
    rules: tuple[Rule, ...]
    denied: list[Rule] = field(default_factory=list)
    bound: Callable[[], Iterable[Rule]] | None = None  # RBAC rules, read when deciding


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


TokenResolver = Callable[[str], tuple[str, Callable[[], Iterable[Rule]]] | None]


@dataclass(frozen=True, slots=True)
class Request:
    """One resource request as the authorizer saw it (SelfSubjectAccessReviews are the
    create of selfsubjectaccessreviews, not the attributes they ask about)."""

    user: str
    attrs: Attributes
    allowed: bool


class Authorizer:
    def __init__(self) -> None:
        self._tokens: dict[str, Principal] = {}
        self._denied: dict[str, list[Rule]] = {}
        self._resolvers: list[TokenResolver] = []
        # The last resource requests, oldest first: what a client really asked for.
        self.requests: deque[Request] = deque(maxlen=100_000)

    def add_token(self, token: str, user: str, rules: Iterable[Rule]) -> None:
        self._tokens[token] = Principal(user, tuple(rules), self._denied.setdefault(token, []))

    def add_resolver(self, resolver: TokenResolver) -> None:
        """Tokens not in the table are offered to ``resolver`` (ServiceAccount tokens):
        it returns the user and a function giving that user's bound rules, or None."""
        self._resolvers.append(resolver)

    def deny(self, token: str, verb: str, resource: str, group: str = "") -> None:
        """Take away one verb on one resource (``pods/eviction``) from a token."""
        if token not in self._tokens and self._resolve(token) is None:
            raise KeyError(f"unknown token {token!r}")
        self._denied.setdefault(token, []).append(Rule.of([verb], [resource], [group]))

    def _resolve(self, token: str) -> Principal | None:
        for resolver in self._resolvers:
            found = resolver(token)
            if found is not None:
                user, bound = found
                return Principal(user, (), self._denied.setdefault(token, []), bound)
        return None

    def authenticate(self, header: str | None) -> Principal | None:
        if not header or not header.startswith("Bearer "):
            return None
        token = header.removeprefix("Bearer ").strip()
        return self._tokens.get(token) or self._resolve(token)

    @staticmethod
    def decide(principal: Principal, attrs: Attributes) -> Decision:
        if any(rule.allows(attrs) for rule in principal.denied):
            return Decision(False, "denied by a sandbox fault")
        for rule in principal.rules:
            if rule.allows(attrs):
                return Decision(True, f"allowed by the sandbox rules of user {principal.user!r}")
        if principal.bound is not None and any(rule.allows(attrs)
                                               for rule in principal.bound()):
            return Decision(True, f"RBAC: allowed by the roles bound to {principal.user!r}")
        # The real RBAC authorizer gives no reason for a denial; the static table says why.
        return Decision(False, "" if principal.bound is not None
                        else "no rule of the sandbox matched")


def forbidden_reason(user: str, attrs: Attributes) -> str:
    """The real authorizer's wording (forbiddenMessage in responsewriters)."""
    where = (f'in the namespace "{attrs.namespace}"' if attrs.namespace
             else "at the cluster scope")
    return (f'User "{user}" cannot {attrs.verb} resource "{attrs.resource_path}" in API group '
            f'"{attrs.group}" {where}')
