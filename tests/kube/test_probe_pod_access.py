"""assess() for the probe-pod reach against the sandbox's RBAC: the Role of
deploy/extras/probe-pod-rbac.yaml, applied with kubectl and bound to a
ServiceAccount, is exactly enough; without its pods/log rule the strategy is out,
and the reason names what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from corednsprobe.config import Settings
from corednsprobe.kube.access import connect
from corednsprobe.reach import Strategy
from corednsprobe.reach.probepod import assess
from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Kubectl

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings.from_env({"COREDNSPROBE_PROBER_NAMESPACE": "kube-system"})


def _extras(account: str, drop_log_rule: bool = False) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/extras/probe-pod-rbac.yaml")
                                          .read_text()) if d]
    for doc in docs:
        if doc["kind"] == "RoleBinding":
            doc["subjects"] = [{"kind": "ServiceAccount", "name": account,
                                "namespace": "kube-system"}]
        if doc["kind"] == "Role" and drop_log_rule:
            doc["rules"] = [r for r in doc["rules"] if r["resources"] != ["pods/log"]]
    return docs


async def test_the_extras_role_is_exactly_what_assess_asks_for(
        sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    account = tmp_path / "account.yaml"
    account.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ServiceAccount",
                                       "metadata": {"name": "outsider",
                                                    "namespace": "kube-system"}}))
    code, _, err = await kubectl.run("apply", "-f", str(account), "--validate=false")
    assert code == 0, err
    access = await connect(str(sandbox.write_service_account_kubeconfig(
        tmp_path / "sa", "kube-system", "outsider")))
    try:
        found = await assess(access.api, SETTINGS)
        assert found.strategy is Strategy.PROBE_POD and not found.usable
        assert "create pods (core) in namespace kube-system" in found.reason
        assert "get pods/log (core) in namespace kube-system" in found.reason
        assert 'resources: ["pods/log"], verbs: ["get"]' in found.needs

        for drop in (True, False):
            manifest = tmp_path / f"rbac-{drop}.yaml"
            manifest.write_text(yaml.safe_dump_all(_extras("outsider", drop_log_rule=drop)))
            code, _, err = await kubectl.run("apply", "-f", str(manifest), "--validate=false")
            assert code == 0, err
            found = await assess(access.api, SETTINGS)
            if drop:
                assert not found.usable
                assert found.reason == ("not allowed: get pods/log (core) in namespace "
                                        "kube-system")
            else:
                assert found.usable, found.reason
                assert "namespace kube-system" in found.reason
    finally:
        await access.close()
