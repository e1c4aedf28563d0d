"""KUBECONFIG=a:b as kubectl reads it: missing files skipped, the first file to set a
value wins. The real kubectl is the reference every case is compared with."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Command, communicate_within


async def kubectl(kubeconfig_env: str, cache: Path, *args: str) -> tuple[int, str, str]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    process = await asyncio.create_subprocess_exec(
        "kubectl", "--cache-dir", str(cache), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "KUBECONFIG": kubeconfig_env})
    return await communicate_within(process, 30)


def write_files(sandbox: Sandbox, tmp: Path) -> tuple[Path, Path]:
    """``first``: only a user ``sandbox`` with the right token and current-context sandbox.
    ``second``: the sandbox's kubeconfig with a wrong token for that user, plus a
    context ``elsewhere`` (a dead API) that it names as current. Merged by kubectl's
    rules, the first file's token and current context win."""
    first = tmp / "first"
    first.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: sandbox\n"
        f"users:\n- name: sandbox\n  user:\n    token: {sandbox.admin_token}\n")
    second = sandbox.write_kubeconfig(tmp / "second", token="not-a-valid-token")
    text = second.read_text().replace("current-context: sandbox", "current-context: elsewhere")
    text = text.replace("contexts:\n", "contexts:\n- name: elsewhere\n  context:\n"
                        "    cluster: dead\n    user: sandbox\n")
    text = text.replace("clusters:\n", "clusters:\n- name: dead\n  cluster:\n"
                        "    server: https://127.0.0.1:9\n")
    second.write_text(text)
    return first, second


async def test_kubeconfig_list_merges_as_kubectl_does(sandbox: Sandbox, tmp_path: Path,
                                                      corednsprobe: Command) -> None:
    first, second = write_files(sandbox, tmp_path)
    env = os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])
    cache = tmp_path / "cache"
    code, out, err = await kubectl(env, cache, "config", "view", "--minify", "-o", "json")
    assert code == 0, err
    view = json.loads(out)
    assert view["current-context"] == "sandbox"
    code, _, err = await kubectl(env, cache, "get", "service", "-n", "kube-system", "kube-dns")
    assert code == 0, err  # kubectl used the first file's token against the second's cluster

    corednsprobe.env["KUBECONFIG"] = env
    code, out, err = await corednsprobe.run("targets", "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "ok"


async def test_only_missing_kubeconfigs_is_exit_3_naming_them(tmp_path: Path,
                                                                corednsprobe: Command) -> None:
    missing = [str(tmp_path / "a"), str(tmp_path / "b")]
    corednsprobe.env["KUBECONFIG"] = os.pathsep.join(missing)
    corednsprobe.env.pop("KUBERNETES_SERVICE_HOST", None)
    code, out, err = await corednsprobe.run("targets")
    assert code == 3, err
    assert f"no kubeconfig at {missing[0]!r}, {missing[1]!r}" in err
    assert out == ""
