"""deploy/: kustomize builds it, kubernetes-validate accepts it, and its RBAC grants
exactly what the code asks the API for."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.kube.access import Permission, read_permissions, remediation_permissions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl absent")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    import yaml  # kubernetes-validate brings PyYAML

    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    path = tmp_path_factory.mktemp("deploy") / "all.yaml"
    path.write_text(out)
    return path, [d for d in yaml.safe_load_all(out) if d]


def test_kubernetes_validate_accepts_every_object(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, docs = rendered
    proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {d["kind"] for d in docs} >= {"ServiceAccount", "Role", "RoleBinding", "Deployment",
                                        "Service"}


def _grants(docs: list[dict[str, Any]], p: Permission) -> bool:
    for role in (d for d in docs if d["kind"] == "Role"):
        if role["metadata"]["namespace"] != p.namespace:
            continue
        res = f"{p.resource}/{p.subresource}" if p.subresource else p.resource
        for rule in role["rules"]:
            if (p.group in rule["apiGroups"] and res in rule["resources"]
                    and p.verb in rule["verbs"]):
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


@pytest.mark.parametrize("mode", ["evict", "delete", "dry-run"])
def test_rbac_grants_every_write_remediation_checks(
    rendered: tuple[Path, list[dict[str, Any]]], mode: str,
) -> None:
    _, docs = rendered
    wanted = remediation_permissions(mode, "kube-system", "kube-system")
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
