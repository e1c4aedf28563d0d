"""A wrong Service name is not success: `targets` names what it looked for, what
DNS-looking Services it found instead and the setting to change, and exits 1."""

from __future__ import annotations

import json
from pathlib import Path

from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Command


async def test_a_wrong_service_name_exits_1_and_points_at_the_right_one(
        sandbox: Sandbox, tmp_path: Path, corednsprobe: Command) -> None:
    kubeconfig = str(sandbox.write_kubeconfig(tmp_path / "kc"))
    cluster_ip = sandbox.service("kube-system", "kube-dns")["spec"]["clusterIP"]
    corednsprobe.env["COREDNSPROBE_SERVICE"] = "nope"
    code, out, err = await corednsprobe.run("targets", "--kubeconfig", kubeconfig)
    assert code == 1, err
    assert out == ""  # no empty table
    for part in ("no Service 'nope' in namespace 'kube-system'",
                 f"kube-dns ({cluster_ip}, 53/UDP", "COREDNSPROBE_SERVICE=kube-dns"):
        assert part in err, part
    code, out, err = await corednsprobe.run("targets", "--json", "--kubeconfig", kubeconfig)
    assert code == 1, err
    assert json.loads(out)["state"] == "no_service"
    assert "COREDNSPROBE_SERVICE=kube-dns" in err


async def test_namespace_option_is_where_the_service_is_looked_for(
        sandbox: Sandbox, tmp_path: Path, corednsprobe: Command) -> None:
    kubeconfig = str(sandbox.write_kubeconfig(tmp_path / "kc"))
    code, out, err = await corednsprobe.run("targets", "-n", "default", "--kubeconfig",
                                            kubeconfig)
    assert code == 1, err
    assert "no Service 'kube-dns' in namespace 'default'" in err
    assert "No Service in default serves port 53" in err
    code, out, err = await corednsprobe.run("targets", "--namespace", "kube-system",
                                            "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert "state: ok" in out
