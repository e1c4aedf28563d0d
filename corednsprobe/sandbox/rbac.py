"""RBAC as the real authorizer evaluates it, over the sandbox's stored objects.

Owns: ServiceAccount tokens (minted per account; a token stops working when
its account is deleted), the identity behind them (``system:serviceaccount:
<ns>:<name>`` in the groups ``system:serviceaccounts``, ``system:serviceaccounts:
<ns>`` and ``system:authenticated``), and turning the Roles, ClusterRoles,
RoleBindings and ClusterRoleBindings that apply to that identity into the
authorizer's rules: a ClusterRoleBinding's rules hold everywhere, a
RoleBinding's only in its namespace (also when it references a ClusterRole),
subjects matched as ``appliesToUser`` in plugin/pkg/auth/authorizer/rbac does.
The bootstrap ``system:basic-user`` role (self access reviews for everyone
authenticated) is seeded like the real apiserver's. Never does: HTTP.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from corednsprobe.sandbox import resources as R
from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.store import Store

Obj = dict[str, Any]

SERVICE_ACCOUNTS = R.require("", "serviceaccounts")
ROLES = R.require("rbac.authorization.k8s.io", "roles")
ROLE_BINDINGS = R.require("rbac.authorization.k8s.io", "rolebindings")
CLUSTER_ROLES = R.require("rbac.authorization.k8s.io", "clusterroles")
CLUSTER_ROLE_BINDINGS = R.require("rbac.authorization.k8s.io", "clusterrolebindings")
RBAC_GROUP = "rbac.authorization.k8s.io"

BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
BASIC_USER_ROLE: Obj = {
    "metadata": {"name": "system:basic-user", "labels": dict(BOOTSTRAP_LABELS),
                 "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
    "rules": [{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
               "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
              {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
               "resources": ["selfsubjectreviews"]}],
}
BASIC_USER_BINDING: Obj = {
    "metadata": {"name": "system:basic-user", "labels": dict(BOOTSTRAP_LABELS),
                 "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
    "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "system:basic-user"},
    "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:authenticated"}],
}


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...]


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def service_account_identity(namespace: str, name: str) -> Identity:
    return Identity(service_account_user(namespace, name),
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                     "system:authenticated"))


def applies_to(identity: Identity, subject: Obj) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(name == identity.user)
    if kind == "Group":
        return name in identity.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or ""
        return bool(namespace) and service_account_user(namespace, name) == identity.user
    return False


def _rules(policy_rules: Iterable[Obj], namespace: str | None) -> list[Rule]:
    found = []
    for rule in policy_rules:
        if rule.get("nonResourceURLs") and not rule.get("resources"):
            continue  # the sandbox authorizes resource requests only
        found.append(Rule.of(rule.get("verbs") or (), rule.get("resources") or (),
                             rule.get("apiGroups") or (), rule.get("resourceNames") or (),
                             None if namespace is None else (namespace,)))
    return found


class Rbac:
    """The bound rules of an identity, read from the store on every decision."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tokens: dict[str, tuple[str, str]] = {}  # token → (namespace, account)

    def mint(self, namespace: str, name: str) -> str:
        """A new token for an existing ServiceAccount (KeyError if it does not exist)."""
        if self.store.get(SERVICE_ACCOUNTS, namespace, name) is None:
            raise KeyError(f'serviceaccounts "{name}" not found in namespace {namespace}')
        token = f"sandbox-sa-{secrets.token_hex(16)}"
        self._tokens[token] = (namespace, name)
        return token

    def identity(self, token: str) -> Identity | None:
        """Whose token this is, while the account exists."""
        owner = self._tokens.get(token)
        if owner is None or self.store.get(SERVICE_ACCOUNTS, *owner) is None:
            return None
        return service_account_identity(*owner)

    def rules_for(self, identity: Identity) -> list[Rule]:
        found: list[Rule] = []
        for binding in self.store.items(CLUSTER_ROLE_BINDINGS):
            if any(applies_to(identity, s) for s in binding.get("subjects") or ()):
                role = self._role(binding.get("roleRef") or {}, "")
                found.extend(_rules((role or {}).get("rules") or (), None))
        for binding in self.store.items(ROLE_BINDINGS):
            if any(applies_to(identity, s) for s in binding.get("subjects") or ()):
                namespace = binding["metadata"]["namespace"]
                role = self._role(binding.get("roleRef") or {}, namespace)
                found.extend(_rules((role or {}).get("rules") or (), namespace))
        return found

    def _role(self, ref: Obj, namespace: str) -> Obj | None:
        if ref.get("kind") == "ClusterRole":
            return self.store.get(CLUSTER_ROLES, "", ref.get("name", ""))
        if ref.get("kind") == "Role" and namespace:
            return self.store.get(ROLES, namespace, ref.get("name", ""))
        return None
