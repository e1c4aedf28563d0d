"""deploy/: kustomize builds it, kubernetes-validate accepts it, and its RBAC grants
exactly what the code asks the API for."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.kube.access import Permission, read_permissions, remediation_permissions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl absent")


# Every kustomization a user applies, and the remediation mode each sets.
VARIANTS = {"deploy": "evict", "deploy/overlays/dry-run": "dry-run",
            "deploy/overlays/delete": "delete"}
LEASE = "corednsprobe"  # COREDNSPROBE_LEASE_NAME's default, named in the Role


def _render(path: Path) -> str:
    return subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True,
                          text=True, timeout=120, check=True).stdout


@pytest.fixture(scope="module")
def all_rendered(tmp_path_factory: pytest.TempPathFactory,
                 ) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    import yaml  # kubernetes-validate brings PyYAML

    out = {}
    for variant in VARIANTS:
        text = _render(ROOT / variant)
        path = tmp_path_factory.mktemp("deploy") / "all.yaml"
        path.write_text(text)
        out[variant] = (path, [d for d in yaml.safe_load_all(text) if d])
    return out


@pytest.fixture(scope="module")
def rendered(all_rendered: dict[str, tuple[Path, list[dict[str, Any]]]],
             ) -> tuple[Path, list[dict[str, Any]]]:
    return all_rendered["deploy"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_kubernetes_validate_accepts_every_object(
    all_rendered: dict[str, tuple[Path, list[dict[str, Any]]]], variant: str,
) -> None:
    path, docs = all_rendered[variant]
    proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {d["kind"] for d in docs} >= {"ServiceAccount", "Role", "RoleBinding", "Deployment",
                                        "Service", "PodDisruptionBudget", "NetworkPolicy"}


def _grants(docs: list[dict[str, Any]], p: Permission) -> bool:
    for role in (d for d in docs if d["kind"] == "Role"):
        if role["metadata"]["namespace"] != p.namespace:
            continue
        res = f"{p.resource}/{p.subresource}" if p.subresource else p.resource
        for rule in role["rules"]:
            names = rule.get("resourceNames") or []
            if (p.group in rule["apiGroups"] and res in rule["resources"]
                    and p.verb in rule["verbs"] and (not names or p.name in names)):
                return True
    return False


def test_rbac_grants_every_permission_the_code_checks(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    missing = [p.what for p in read_permissions("kube-system") if not _grants(docs, p)]
    missing += [p.what for p in read_permissions("kube-system", legacy_endpoints=True)
                if not _grants(docs, p)]
    assert missing == []


@pytest.mark.parametrize(("variant", "mode"), VARIANTS.items())
def test_rbac_grants_every_write_remediation_checks(
    all_rendered: dict[str, tuple[Path, list[dict[str, Any]]]], variant: str, mode: str,
) -> None:
    _, docs = all_rendered[variant]
    wanted = remediation_permissions(mode, "kube-system", "kube-system", LEASE)
    assert wanted, "every mode but off needs the Lease"
    assert [p.what for p in wanted if not _grants(docs, p)] == []


def test_deployment_runs_two_replicas_for_leader_election(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2


def test_every_role_is_bound_to_the_service_account(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"])
             for d in docs if d["kind"] == "Role"}
    bound = {(d["metadata"]["namespace"], d["roleRef"]["name"]) for d in docs
             if d["kind"] == "RoleBinding"
             and {"kind": "ServiceAccount", "name": "corednsprobe", "namespace": "kube-system"}
             in d["subjects"]}
    assert roles == bound


def test_extra_manifests_are_valid() -> None:
    extras = sorted(str(p) for p in (ROOT / "deploy" / "extras").glob("*.yaml"))
    assert extras, "deploy/extras holds the probe Job and the NodePort example"
    proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *extras],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _service_links(service: dict[str, Any], ip: str = "10.96.44.7") -> dict[str, str]:
    """The variables the kubelet injects for ``service`` (Docker-style links)."""
    name = service["metadata"]["name"].upper().replace("-", "_")
    ports = service["spec"]["ports"]
    first = ports[0]
    env = {f"{name}_SERVICE_HOST": ip, f"{name}_SERVICE_PORT": str(first["port"]),
           f"{name}_PORT": f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"}
    for p in ports:
        proto = p.get("protocol", "TCP")
        base = f"{name}_PORT_{p['port']}_{proto}"
        if p.get("name"):
            env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        env.update({base: f"{proto.lower()}://{ip}:{p['port']}", f"{base}_PROTO": proto.lower(),
                    f"{base}_PORT": str(p["port"]), f"{base}_ADDR": ip})
    return env


def test_the_container_starts_with_its_env_even_with_service_links(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    from corednsprobe.config import Settings

    _, docs = rendered
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    env = {e["name"]: e["value"] for e in pod["containers"][0].get("env", [])}
    for service in (d for d in docs if d["kind"] == "Service"):
        env.update(_service_links(service))
    assert any(k.startswith("COREDNSPROBE_SERVICE_") for k in env)
    Settings.from_env(env)  # a malformed or unknown setting would raise


def _rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    """Every (namespace, group, resource, verb, name or "") the Roles grant."""
    out = set()
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            out.add((role["metadata"]["namespace"], group, res, verb, name))
    return out


def _needed(mode: str) -> set[tuple[str, str, str, str, str]]:
    """What the code asks the API for in ``mode``: the table its self-check uses."""
    wanted = [*read_permissions("kube-system"),
              *read_permissions("kube-system", legacy_endpoints=True),
              *remediation_permissions(mode, "kube-system", "kube-system", LEASE),
              *remediation_permissions(mode, "kube-system", "kube-system", LEASE,
                                       legacy_endpoints=True)]
    return {(p.namespace, p.group, f"{p.resource}/{p.subresource}" if p.subresource
             else p.resource, p.verb, p.name) for p in wanted}


@pytest.mark.parametrize(("variant", "mode"), VARIANTS.items())
def test_rbac_grants_exactly_what_the_code_asks_for(
    all_rendered: dict[str, tuple[Path, list[dict[str, Any]]]], variant: str, mode: str,
) -> None:
    _, docs = all_rendered[variant]
    granted, needed = _rules(docs), _needed(mode)
    assert sorted(granted - needed) == [], "rules the code never uses"
    assert sorted(needed - granted) == [], "rules the code needs"
    # Lease writes other than create name the one Lease; nothing else is wildcarded
    assert all("*" not in rule for rule in granted)
    assert {r[3] for r in granted if r[2] == "leases" and r[4] == ""} == {"create"}


@pytest.mark.parametrize(("variant", "mode"), VARIANTS.items())
def test_each_variant_sets_its_remediation_mode(
    all_rendered: dict[str, tuple[Path, list[dict[str, Any]]]], variant: str, mode: str,
) -> None:
    from corednsprobe.config import Settings

    _, docs = all_rendered[variant]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e["value"]
           for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["COREDNSPROBE_REMEDIATION"] == mode
    assert Settings.from_env(env).remediation == mode


def _pod(docs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    return template["metadata"]["labels"], template["spec"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # no matchExpressions here
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_pods_are_placed_like_coredns_and_spread_over_nodes(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    labels, pod = _pod(docs)
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"key": "CriticalAddonsOnly", "operator": "Exists"} in pod["tolerations"]
    [spread] = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["maxSkew"]) == ("kubernetes.io/hostname", 1)
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # never keeps a prober pending
    assert _selects(spread["labelSelector"], labels)
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert _selects(term["podAffinityTerm"]["labelSelector"], labels)
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"][
        "podAntiAffinity"]


def test_pdb_lets_a_drain_take_one_prober_at_a_time(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    labels, _ = _pod(docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert _selects(pdb["spec"]["selector"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1 < deployment["spec"]["replicas"]


def _port_rules(rules: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for r in rules for p in r["ports"]}


def test_network_policy_admits_only_prometheus_and_the_replicas_to_the_metrics_port(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    labels, pod = _pod(docs)
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert _selects(spec["podSelector"], labels)
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    metrics_port = next(p["containerPort"] for p in pod["containers"][0]["ports"]
                        if p["name"] == "http")
    assert metrics_port == 9180
    assert _port_rules(spec["ingress"]) == {("TCP", metrics_port)}
    sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
    assert sources == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": spec["podSelector"]}]
    # out: DNS and the health/ready ports to the CoreDNS pods, the API server, the other
    # replica; nothing else
    assert _port_rules(spec["egress"]) == {("UDP", 53), ("TCP", 53), ("TCP", 8080),
                                           ("TCP", 8181), ("TCP", 443), ("TCP", 6443),
                                           ("TCP", metrics_port)}
    dns = next(r for r in spec["egress"] if ("UDP", 53) in _port_rules([r]))
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert _port_rules([dns]) == {("UDP", 53), ("TCP", 53), ("TCP", 8080), ("TCP", 8181)}


def test_the_documented_patch_moves_the_metrics_port_to_another_namespace(
    tmp_path: Path,
) -> None:
    import yaml

    comment = (ROOT / "deploy" / "base" / "networkpolicy.yaml").read_text()
    block = comment[comment.index("#        patches:"):comment.index("#      (kubernetes.io")]
    patch = "\n".join(line.removeprefix("#        ") for line in block.splitlines())
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(ROOT / 'deploy', tmp_path)}\n{patch}\n")
    docs = [d for d in yaml.safe_load_all(_render(tmp_path)) if d]
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}}]


def test_readme_kustomizations_exist_and_the_first_step_is_dry_run() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    paths = re.findall(r"kubectl apply -k (\S+?)/?`", readme)
    assert paths[0] == "deploy/overlays/dry-run", paths
    for path in paths:
        assert (ROOT / path / "kustomization.yaml").is_file(), path
