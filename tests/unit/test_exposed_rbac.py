"""deploy/extras/exposed-rbac.yaml grants exactly what the exposed strategy asks the
API for (its SelfSubjectAccessReview table and the reads of the DNS Service), the
nodes through a ClusterRole, and kubernetes-validate accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from corednsprobe.kube.access import read_permissions
from corednsprobe.reach.exposed import exposed_permissions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "extras" / "exposed-rbac.yaml"
Rule = tuple[str, str, str, str]  # namespace ("" cluster-wide), group, resource, verb


def granted(docs: list[dict[str, Any]]) -> set[Rule]:
    out: set[Rule] = set()
    bound = {(d["kind"], d.get("metadata", {}).get("namespace", ""), d["roleRef"]["name"])
             for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        ns = role["metadata"].get("namespace", "")
        binding = "RoleBinding" if role["kind"] == "Role" else "ClusterRoleBinding"
        assert (binding, ns, role["metadata"]["name"]) in bound, role["metadata"]["name"]
        for rule in role["rules"]:
            assert not rule.get("resourceNames")
            out |= {(ns, g, r, v) for g in rule["apiGroups"] for r in rule["resources"]
                    for v in rule["verbs"]}
    return out


def needed() -> set[Rule]:
    wanted = [*read_permissions("kube-system"),
              *read_permissions("kube-system", legacy_endpoints=True),
              *exposed_permissions("kube-system")]
    return {(p.namespace, p.group, p.resource, p.verb) for p in wanted}


def test_the_example_grants_exactly_what_the_code_asks_for() -> None:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    rules = granted(docs)
    assert sorted(rules - needed()) == [], "rules the code never uses"
    assert sorted(needed() - rules) == [], "rules the code needs"
    assert ("", "", "nodes", "list") in rules
    assert all("*" not in "".join(r) for r in rules)


@pytest.mark.skipif(shutil.which("kubernetes-validate") is None,
                    reason="kubernetes-validate absent")
def test_kubernetes_validate_accepts_the_example() -> None:
    proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(EXAMPLE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
