"""`corednsprobe targets` when the cluster will not have us: each failure is
exit code 3 and one paragraph that says where, as whom, what went wrong and
what to check. Real subprocesses against the sandbox."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Command, MakeSandbox

EXIT_CLUSTER = 3
PROBER = "system:serviceaccount:kube-system:corednsprobe"


def paragraph(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("corednsprobe:")]
    assert len(lines) == 1, stderr  # one paragraph, and no traceback
    assert "Traceback" not in stderr
    return lines[0]


async def test_a_rejected_token_exits_3_and_says_what_to_check(
        sandbox: Sandbox, tmp_path: Path, corednsprobe: Command) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc", token="not-a-known-token")
    code, out, err = await corednsprobe.run("targets", "--kubeconfig", str(kubeconfig))
    assert code == EXIT_CLUSTER and out == ""
    text = paragraph(err)
    for part in (sandbox.url, str(kubeconfig), "context 'sandbox'", "auth: bearer token",
                 "refused the credentials", "401 Unauthorized",
                 "Check that the token or client certificate is current"):
        assert part in text, part


async def test_a_token_that_may_not_watch_endpointslices_names_the_rule(
        sandbox: Sandbox, tmp_path: Path, corednsprobe: Command) -> None:
    sandbox.add_token("prober", PROBER, [Rule.of(["*"], ["*"])])
    sandbox.deny("prober", "watch", "endpointslices", "discovery.k8s.io")
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc", token="prober")
    code, out, err = await corednsprobe.run("targets", "--kubeconfig", str(kubeconfig))
    assert code == EXIT_CLUSTER and out == ""
    assert f"API {sandbox.url}" in err
    missing = [line.strip() for line in err.splitlines() if line.strip().startswith("- ")]
    assert missing == [
        "- watch endpointslices (discovery.k8s.io) in namespace kube-system: needed to watch "
        "the DNS endpoints. Grant: Role in kube-system: apiGroups: [\"discovery.k8s.io\"], "
        "resources: [\"endpointslices\"], verbs: [\"watch\"]"]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_an_unreachable_api_exits_3(sandbox: Sandbox, tmp_path: Path,
                                          corednsprobe: Command, closed_port: int) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    text = kubeconfig.read_text().replace(sandbox.url, f"https://127.0.0.1:{closed_port}")
    kubeconfig.write_text(text)
    code, out, err = await corednsprobe.run("targets", "--kubeconfig", str(kubeconfig),
                                            within=60)
    assert code == EXIT_CLUSTER and out == ""
    text = paragraph(err)
    for part in (f"could not reach API https://127.0.0.1:{closed_port}", "context 'sandbox'",
                 "Connect call failed", "Check that the address is right"):
        assert part in text, part


async def test_without_endpointslices_only_the_legacy_rules_are_needed(
        make_sandbox: MakeSandbox, tmp_path: Path, corednsprobe: Command) -> None:
    sandbox = await make_sandbox(unserved_group_versions=("discovery.k8s.io/v1",))
    sandbox.add_token("prober", PROBER, [
        Rule.of(["get", "list", "watch"], ["endpoints", "services", "pods"], [""]),
        Rule.of(["create"], ["selfsubjectaccessreviews"], ["authorization.k8s.io"])])
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc", token="prober")
    code, out, err = await corednsprobe.run("targets", "--json", "--kubeconfig",
                                            str(kubeconfig))
    assert code == 0, err
    ready = sorted(p["status"]["podIP"] for p in sandbox.dns_pods())
    assert sorted(t["address"] for t in json.loads(out)["pods"]) == ready


async def test_a_token_that_may_not_review_its_own_access_is_a_missing_permission(
        sandbox: Sandbox, tmp_path: Path, corednsprobe: Command) -> None:
    sandbox.add_token("prober", PROBER, [Rule.of(["*"], ["*"])])
    sandbox.deny("prober", "create", "selfsubjectaccessreviews", "authorization.k8s.io")
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc", token="prober")
    code, out, err = await corednsprobe.run("targets", "--kubeconfig", str(kubeconfig))
    assert code == EXIT_CLUSTER and out == ""
    text = paragraph(err)
    for part in (sandbox.url, "403 Forbidden", "may not create selfsubjectaccessreviews",
                 "a missing permission, not bad credentials", "system:basic-user"):
        assert part in text, part
    assert "refused the credentials" not in text and "expired token" not in text
