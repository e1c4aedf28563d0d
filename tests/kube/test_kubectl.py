"""The real kubectl 1.32 against the sandbox: get, watch, delete (with its
wait-for-deletion watch), events and rollout restart, parsed from its JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import Http, Kubectl, eventually

Obj = dict[str, Any]


def json_stream(text: str) -> list[Obj]:
    """kubectl --watch -o json prints one pretty JSON object after another."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return found
        try:
            obj, index = decoder.raw_decode(text, index)
        except ValueError:
            return found  # a partial object at the end
        found.append(obj)



async def test_get_the_resources_corednsprobe_uses(make_sandbox: Any, tmp_path: Any) -> None:
    sandbox: Sandbox = await make_sandbox(pdb_min_available=1)
    kubectl = Kubectl(sandbox.write_kubeconfig(tmp_path / "kc"), tmp_path / "cache")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "dns-prober"}, "spec": {"holderIdentity": "me"}}
    (tmp_path / "lease.json").write_text(json.dumps(lease))
    # The sandbox serves no OpenAPI document, so kubectl's client-side validation is off.
    code, out, err = await kubectl.run("create", "--validate=false", "-f",
                                       str(tmp_path / "lease.json"))
    assert code == 0, err
    listing = await kubectl.json("get", "pods,services,endpointslices,leases,pdb",
                                 "-n", "kube-system")
    kinds = [item["kind"] for item in listing["items"]]
    assert kinds.count("Pod") == 2
    assert kinds.count("Service") == 1 and kinds.count("EndpointSlice") == 1
    assert kinds.count("Lease") == 1 and kinds.count("PodDisruptionBudget") == 1
    pods = [i for i in listing["items"] if i["kind"] == "Pod"]
    assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"] for p in pods)
    endpoints = next(i for i in listing["items"] if i["kind"] == "EndpointSlice")["endpoints"]
    assert sorted(e["addresses"][0] for e in endpoints) == sorted(
        p["status"]["podIP"] for p in pods)
    pdb = next(i for i in listing["items"] if i["kind"] == "PodDisruptionBudget")
    assert pdb["status"]["currentHealthy"] == 2 and pdb["status"]["disruptionsAllowed"] == 1
    code, out, err = await kubectl.run("get", "pods")  # the human table
    assert code == 0 and all(p["metadata"]["name"] in out for p in pods), err


async def test_delete_pod_replaces_it_and_the_old_one_terminates(
        sandbox: Sandbox, kubectl: Kubectl, http: Http) -> None:
    victim = sandbox.dns_pods()[0]
    name, old_ip = victim["metadata"]["name"], victim["status"]["podIP"]
    rv = sandbox.store.rv
    watching = asyncio.create_task(http.watch(
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
        f"?watch=1&resourceVersion={rv}&timeoutSeconds=4"))
    code, out, err = await kubectl.run("delete", "pod", name)  # waits until it is gone
    assert code == 0, err
    assert f'pod "{name}" deleted' in out
    assert name not in [p["metadata"]["name"] for p in sandbox.dns_pods()]
    await sandbox.wait_ready(within=10)
    _, events = await watching
    states = [{e["targetRef"]["name"]: e["conditions"] for e in ev["object"]["endpoints"] or ()}
              for ev in events if ev["type"] == "MODIFIED"]
    assert {"ready": False, "serving": True, "terminating": True} in [
        s.get(name) for s in states]
    assert name not in states[-1]
    pods = await kubectl.json("get", "pods")
    new_ips = {p["status"]["podIP"] for p in pods["items"]}
    assert old_ip not in new_ips and len(new_ips) == 2
    slices = await kubectl.json("get", "endpointslices")
    published = {e["addresses"][0] for e in slices["items"][0]["endpoints"]}
    assert published == new_ips


async def test_watch_with_json_output(sandbox: Sandbox, kubectl: Kubectl) -> None:
    process = await asyncio.create_subprocess_exec(
        *kubectl.base, "get", "pods", "--watch", "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        text = ""
        async with asyncio.timeout(15):
            while len(json_stream(text)) < 2:
                text += (await process.stdout.read(65536)).decode()
        first = {o["metadata"]["name"] for o in json_stream(text)}
        victim = sandbox.dns_pods()[0]["metadata"]["name"]
        sandbox.registry.delete(PODS, "kube-system", victim, {}, None)
        async with asyncio.timeout(15):
            while not any(o["metadata"]["name"] == victim and
                          o["metadata"].get("deletionTimestamp") for o in json_stream(text)):
                text += (await process.stdout.read(65536)).decode()
    finally:
        process.kill()
        await process.wait()
    objects = json_stream(text)
    assert all(o["kind"] == "Pod" for o in objects)
    assert victim in first and len(first) == 2
    terminating = [o for o in objects if o["metadata"]["name"] == victim
                   and o["metadata"].get("deletionTimestamp")]
    assert terminating[0]["metadata"]["deletionGracePeriodSeconds"] == 1


async def test_get_events(sandbox: Sandbox, kubectl: Kubectl) -> None:
    events = await kubectl.json("get", "events")
    reasons = {e["reason"] for e in events["items"]}
    assert {"Scheduled", "Started", "SuccessfulCreate"} <= reasons
    code, out, err = await kubectl.run("get", "events")
    assert code == 0, err
    assert len(out.splitlines()) == len(events["items"]) + 1  # header + one line each
    filtered = await kubectl.json("get", "events", "--field-selector", "reason=Scheduled")
    assert len(filtered["items"]) == 2


async def test_rollout_restart_replaces_every_pod(sandbox: Sandbox, kubectl: Kubectl) -> None:
    before = {p["metadata"]["name"] for p in sandbox.dns_pods()}
    code, out, err = await kubectl.run("rollout", "restart", "deployment/coredns")
    assert code == 0, err
    assert "deployment.apps/coredns restarted" in out
    deployment = await kubectl.json("get", "deployment", "coredns")
    assert deployment["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/restartedAt" in \
        deployment["spec"]["template"]["metadata"]["annotations"]

    def replaced() -> bool:
        live = [p for p in sandbox.dns_pods() if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 2 and not ({p["metadata"]["name"] for p in sandbox.dns_pods()}
                                       & before)

    await eventually(replaced)
    await sandbox.wait_ready(within=10)
    code, out, err = await kubectl.run("rollout", "status", "deployment/coredns",
                                       "--timeout=20s")
    assert code == 0, err
    assert "successfully rolled out" in out


async def test_auth_can_i_reads_the_token_rules(sandbox: Sandbox, tmp_path: Any) -> None:
    sandbox.add_token("prober", "system:serviceaccount:kube-system:dns-prober",
                      [Rule.of(["get", "list", "watch"], ["pods"], [""]),
                       Rule.of(["create"], ["selfsubjectaccessreviews"])])
    prober = Kubectl(sandbox.write_kubeconfig(tmp_path / "kc", token="prober"),
                     tmp_path / "cache")
    # kubectl posts this review as protobuf; the answer must follow the token's rules.
    code, out, err = await prober.run("auth", "can-i", "list", "pods")
    assert (code, out.strip()) == (0, "yes"), err
    code, out, _ = await prober.run("auth", "can-i", "create", "pods/eviction")
    assert (code, out.strip()) == (1, "no - no rule of the sandbox matched")
    sandbox.deny("prober", "list", "pods")
    code, out, _ = await prober.run("auth", "can-i", "list", "pods")
    assert (code, out.strip()) == (1, "no - denied by a sandbox fault")
    code, _, err = await prober.run("get", "pods")
    assert code == 1
    assert ('pods is forbidden: User "system:serviceaccount:kube-system:dns-prober" cannot list '
            'resource "pods" in API group "" in the namespace "kube-system"') in err
