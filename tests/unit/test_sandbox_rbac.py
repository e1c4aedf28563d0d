"""The sandbox's RBAC evaluation against the real authorizer's rules
(RuleAllows in pkg/apis/rbac/v1/evaluation_helpers.go, appliesToUser in
plugin/pkg/auth/authorizer/rbac): verbs, groups, subresources, resourceNames,
namespaces of RoleBindings, subjects."""

from __future__ import annotations

from corednsprobe.sandbox.auth import Attributes, Rule
from corednsprobe.sandbox.rbac import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    ROLE_BINDINGS,
    ROLES,
    Rbac,
    applies_to,
    service_account_identity,
)
from corednsprobe.sandbox.store import Store

SA = service_account_identity("kube-system", "prober")


def allows(rule: Rule, verb: str, resource: str, sub: str = "", ns: str = "kube-system",
           name: str = "", group: str = "") -> bool:
    return rule.allows(Attributes(verb, group, resource, sub, ns, name))


def test_resource_matching() -> None:
    pods = Rule.of(["get"], ["pods"], [""])
    assert allows(pods, "get", "pods") and not allows(pods, "get", "pods", "log")
    star_sub = Rule.of(["get"], ["*/log"], [""])
    assert allows(star_sub, "get", "pods", "log") and not allows(star_sub, "get", "pods")
    pods_star = Rule.of(["get"], ["pods/*"], [""])
    assert not allows(pods_star, "get", "pods", "log") and not allows(pods_star, "get", "pods")
    assert allows(Rule.of(["*"], ["*"], ["*"]), "delete", "pods", "eviction")
    assert not allows(Rule.of(["get"], ["pods"], []), "get", "pods")  # no apiGroups: nothing
    assert not allows(pods, "get", "pods", group="apps")


def test_resource_names() -> None:
    lease = Rule.of(["get", "update", "create", "list"], ["leases"], ["coordination.k8s.io"],
                    ["corednsprobe"])
    group = "coordination.k8s.io"
    assert allows(lease, "get", "leases", name="corednsprobe", group=group)
    assert not allows(lease, "get", "leases", name="other", group=group)
    assert not allows(lease, "create", "leases", group=group)  # create has no name
    assert not allows(lease, "list", "leases", group=group)


def test_subjects() -> None:
    assert applies_to(SA, {"kind": "ServiceAccount", "name": "prober",
                           "namespace": "kube-system"})
    assert not applies_to(SA, {"kind": "ServiceAccount", "name": "prober"})  # no namespace
    assert applies_to(SA, {"kind": "Group", "name": "system:serviceaccounts:kube-system"})
    assert applies_to(SA, {"kind": "User", "name": "system:serviceaccount:kube-system:prober"})
    assert not applies_to(SA, {"kind": "User", "name": "prober"})


def test_role_bindings_scope_cluster_roles_to_their_namespace() -> None:
    store = Store()
    store.create(CLUSTER_ROLES, {"metadata": {"name": "reader"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    store.create(ROLES, {"metadata": {"name": "lease", "namespace": "default"}, "rules": [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]})
    subject = {"kind": "ServiceAccount", "name": "prober", "namespace": "kube-system"}
    store.create(ROLE_BINDINGS, {"metadata": {"name": "b", "namespace": "kube-system"},
                                 "roleRef": {"kind": "ClusterRole", "name": "reader"},
                                 "subjects": [subject]})
    store.create(ROLE_BINDINGS, {"metadata": {"name": "c", "namespace": "default"},
                                 "roleRef": {"kind": "Role", "name": "lease"},
                                 "subjects": [subject]})
    rules = Rbac(store).rules_for(SA)

    def can(verb: str, resource: str, ns: str, group: str = "") -> bool:
        return any(allows(r, verb, resource, ns=ns, group=group) for r in rules)

    assert can("list", "pods", "kube-system") and not can("list", "pods", "default")
    assert not can("list", "pods", "")  # cluster scope: a RoleBinding never reaches it
    assert can("get", "leases", "default", "coordination.k8s.io")
    assert not can("get", "leases", "kube-system", "coordination.k8s.io")
    store.create(CLUSTER_ROLE_BINDINGS, {"metadata": {"name": "all"},
                                         "roleRef": {"kind": "ClusterRole", "name": "reader"},
                                         "subjects": [{"kind": "Group",
                                                       "name": "system:authenticated"}]})
    rules = Rbac(store).rules_for(SA)
    assert can("list", "pods", "default") and can("list", "pods", "")
