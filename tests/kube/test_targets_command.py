"""`corednsprobe targets` as people run it: a subprocess against the sandbox,
once as JSON, and with --watch while the real kubectl deletes a pod."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import signal
from pathlib import Path

import pytest

from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Command, Kubectl

NS = "kube-system"


def live_pods(sandbox: Sandbox) -> dict[str, str]:
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in sandbox.dns_pods()
            if not p["metadata"].get("deletionTimestamp")}


async def test_json_lists_the_pods_and_the_cluster_ip(sandbox: Sandbox, tmp_path: Path,
                                                      corednsprobe: Command) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    code, out, err = await corednsprobe.run("targets", "--json", "--kubeconfig",
                                            str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "ok"
    pods = {p["metadata"]["name"]: p for p in sandbox.dns_pods()}
    assert {t["pod"]: t["address"] for t in doc["pods"]} == live_pods(sandbox)
    for target in doc["pods"]:
        pod = pods[target["pod"]]
        assert (target["kind"], target["port"], target["uid"], target["node"]) == (
            "pod", 53, pod["metadata"]["uid"], pod["spec"]["nodeName"])
        assert target["ready"] and target["serving"] and not target["terminating"]
    assert [(s["kind"], s["address"], s["port"]) for s in doc["services"]] == [
        ("service", sandbox.service(NS, "kube-dns")["spec"]["clusterIP"], 53)]
    assert doc["expected"] == [sandbox.service("default", "kubernetes")["spec"]["clusterIP"]]


LINE = re.compile(r"^(\d\d:\d\d:\d\d) #(\d+) state=(\S+) service=(\S+) pods: (.*)$")
CHANGE = re.compile(r"^(\d\d:\d\d:\d\d) #(\d+) (.*)$")
MARK = {"ready": "", "terminating": "(terminating)", "not-ready": "(not-ready)"}


class WatchReader:
    """The pods --watch describes: the whole set on its first line, then changes
    (``+ pod NAME IP STATE``, ``- pod NAME IP``, ``~ pod NAME IP STATE``) applied in
    turn. ``name=ip`` pairs keep the marks such as (terminating)."""

    def __init__(self) -> None:
        self.pods: dict[str, str] = {}
        self.changed: list[str] = []  # pod names that change lines mention

    def apply(self, line: str) -> dict[str, str]:
        match = LINE.match(line)
        if match is not None and not self.pods:
            self.pods = dict(pair.split("=", 1) for pair in match.group(5).split())
            return dict(self.pods)
        change = CHANGE.match(line)
        assert change is not None, line
        words = change.group(3).split()
        if words[0] in "+-~" and words[1] == "pod":
            self.changed.append(words[2])
            if words[0] == "-":
                assert self.pods.pop(words[2]).startswith(words[3]), line
            else:
                self.pods[words[2]] = words[3] + MARK[words[4]]
        return dict(self.pods)


def generation(line: str) -> int:
    match = CHANGE.match(line)
    assert match is not None, line
    return int(match.group(2))


async def test_watch_shows_a_pod_replacement_after_kubectl_delete(
        sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path, corednsprobe: Command) -> None:
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    before = live_pods(sandbox)
    victim = sorted(before)[0]
    process = await corednsprobe.start("targets", "--watch", "--kubeconfig", str(kubeconfig))
    assert process.stdout is not None
    lines: list[str] = []
    reader = WatchReader()
    seen: list[dict[str, str]] = []

    async def line() -> dict[str, str]:
        assert process.stdout is not None
        lines.append((await process.stdout.readline()).decode().rstrip("\n"))
        seen.append(reader.apply(lines[-1]))
        return seen[-1]

    try:
        async with asyncio.timeout(30):
            assert await line() == before
            code, _, err = await kubectl.run("delete", "pod", "-n", NS, victim)
            assert code == 0, err
            while victim in seen[-1] or len(seen[-1]) != 2:
                await line()
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await process.wait() == 130
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    assert any(pods.get(victim) == f"{before[victim]}(terminating)" for pods in seen), lines
    after = seen[-1]
    assert after == live_pods(sandbox)
    (newcomer,) = set(after) - set(before)
    assert after[newcomer] not in before.values()
    # only what changed is printed: the pod left alone is never mentioned again
    (bystander,) = set(before) - {victim}
    assert bystander not in reader.changed and victim in reader.changed, lines
    generations = [generation(text) for text in lines]
    assert generations == sorted(generations)
    assert len(lines) == len(set(lines)), lines  # no line says the same thing twice


async def test_an_api_that_never_completes_a_list_ends_with_exit_3_not_a_hang(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from corednsprobe.cli import targets
    from corednsprobe.config import Settings
    from corednsprobe.kube.access import ClusterAccessError

    monkeypatch.setattr(targets, "FIRST_LIST_WITHIN", 1.0)
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    sandbox.fail_requests(10**6, 500, "endpointslices")  # permissions fine, lists fail
    with pytest.raises(ClusterAccessError) as err:
        await targets.run_targets(targets.ClusterArgs(str(kubeconfig)), Settings.from_env({}),
                                  watch=False, as_json=True, out=io.StringIO())
    assert "did not complete a list of endpointslices within 1 s" in str(err.value)
