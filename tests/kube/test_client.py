"""The real kubernetes_asyncio 36.1.0 client against the sandbox: list+watch,
bookmarks, 410 after compaction, eviction, Lease conflicts, access reviews,
401 and 403."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import MakeSandbox, api_client_for

NS = "kube-system"
SELECTOR = "kubernetes.io/service-name=kube-dns"


async def test_list_then_watch_endpointslices_from_the_list_rv(sandbox: Sandbox,
                                                               api: client.ApiClient) -> None:
    discovery = client.DiscoveryV1Api(api)
    listing = await discovery.list_namespaced_endpoint_slice(NS, label_selector=SELECTOR)
    assert len(listing.items) == 1 and len(listing.items[0].endpoints) == 2
    victim = sandbox.dns_pods()[0]["metadata"]["name"]
    await client.CoreV1Api(api).delete_namespaced_pod(victim, NS)
    seen: list[tuple[str, dict[str, Any]]] = []
    stream = watch.Watch()
    async with asyncio.timeout(15):
        async for event in stream.stream(
                discovery.list_namespaced_endpoint_slice, NS, label_selector=SELECTOR,
                resource_version=listing.metadata.resource_version, timeout_seconds=3):
            endpoints = {e.target_ref.name: e.conditions for e in event["object"].endpoints}
            seen.append((event["type"], endpoints))
            if victim not in endpoints and len(endpoints) == 2 and all(
                    c.ready for c in endpoints.values()):
                stream.stop()
    assert all(kind == "MODIFIED" for kind, _ in seen)
    terminating = [e[victim] for _, e in seen if victim in e and e[victim].terminating]
    assert terminating and terminating[0].serving is True and terminating[0].ready is False


async def test_bookmarks_arrive_and_carry_the_rv(make_sandbox: MakeSandbox,
                                                 tmp_path: Path) -> None:
    sandbox = await make_sandbox(bookmark_interval=0.2)
    async with await api_client_for(sandbox, tmp_path / "kc") as api:
        discovery = client.DiscoveryV1Api(api)
        listing = await discovery.list_namespaced_endpoint_slice(NS)
        kinds = []
        stream = watch.Watch()
        async with asyncio.timeout(10):
            async for event in stream.stream(
                    discovery.list_namespaced_endpoint_slice, NS, allow_watch_bookmarks=True,
                    resource_version=listing.metadata.resource_version, timeout_seconds=2):
                kinds.append(event["type"])
                if len(kinds) == 2:
                    stream.stop()
        assert kinds == ["BOOKMARK", "BOOKMARK"]
        assert stream.resource_version == str(sandbox.store.rv)


@pytest.mark.parametrize("mode", ["expired", "gone", "http"])
async def test_410_after_compaction_raises_api_exception(make_sandbox: MakeSandbox,
                                                         tmp_path: Path, mode: str) -> None:
    sandbox = await make_sandbox()
    sandbox.set_watch_expiry(mode)
    async with await api_client_for(sandbox, tmp_path / "kc") as api:
        discovery = client.DiscoveryV1Api(api)
        listing = await discovery.list_namespaced_endpoint_slice(NS)
        sandbox.registry.delete(PODS, NS, sandbox.dns_pods()[0]["metadata"]["name"], {}, 0)
        sandbox.compact_history()
        with pytest.raises(ApiException) as caught:
            async with asyncio.timeout(10):
                async for _ in watch.Watch().stream(
                        discovery.list_namespaced_endpoint_slice, NS,
                        resource_version=listing.metadata.resource_version, timeout_seconds=5):
                    pass
        assert caught.value.status == 410


async def test_eviction_201_and_429_with_causes(make_sandbox: MakeSandbox,
                                                tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2, pdb_min_available=2)
    async with await api_client_for(sandbox, tmp_path / "kc") as api:
        core = client.CoreV1Api(api)
        first, second = sorted(p["metadata"]["name"] for p in sandbox.dns_pods())
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=first, namespace=NS))
        with pytest.raises(ApiException) as caught:
            await core.create_namespaced_pod_eviction(first, NS, body)
        assert caught.value.status == 429
        assert caught.value.reason == "Too Many Requests"
        causes = json.loads(caught.value.body)["details"]["causes"]
        assert causes == [{"reason": "DisruptionBudget", "message": "The disruption budget "
                           "coredns needs 2 healthy pods and has 2 currently"}]
        await client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget(
            "coredns", NS, {"spec": {"minAvailable": 1}})
        async with asyncio.timeout(10):
            while True:
                pdb = await client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(
                    "coredns", NS)
                if pdb.status.observed_generation == pdb.metadata.generation == 2:
                    break
                await asyncio.sleep(0.05)
        uid = next(p for p in sandbox.dns_pods() if p["metadata"]["name"] == second)[
            "metadata"]["uid"]
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=second, namespace=NS),
                                 delete_options=client.V1DeleteOptions(
                                     preconditions=client.V1Preconditions(uid=uid)))
        # The client would decode the Status into a V1Eviction: read the raw reply.
        response = await core.create_namespaced_pod_eviction(second, NS, body,
                                                             _preload_content=False)
        assert response.status == 201
        assert json.loads(await response.read()) == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}
        pod = await core.read_namespaced_pod(second, NS)
        assert pod.metadata.deletion_timestamp is not None


async def test_lease_create_update_and_conflict(api: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api)
    renew = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="dns-prober"),
                           spec=client.V1LeaseSpec(holder_identity="a",
                                                   lease_duration_seconds=15,
                                                   renew_time=renew))
    created = await leases.create_namespaced_lease(NS, lease)
    assert created.spec.renew_time == renew
    with pytest.raises(ApiException) as caught:
        await leases.create_namespaced_lease(NS, lease)
    assert caught.value.status == 409 and json.loads(caught.value.body)["reason"] == \
        "AlreadyExists"
    created.spec.holder_identity = "b"
    updated = await leases.replace_namespaced_lease("dns-prober", NS, created)
    assert updated.spec.holder_identity == "b"
    created.spec.holder_identity = "c"  # still carries the older resourceVersion
    with pytest.raises(ApiException) as caught:
        await leases.replace_namespaced_lease("dns-prober", NS, created)
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["reason"] == "Conflict"
    current = await leases.read_namespaced_lease("dns-prober", NS)
    assert current.spec.holder_identity == "b"


async def test_self_subject_access_review_tells_the_truth(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    sandbox.add_token("prober", "system:serviceaccount:kube-system:dns-prober",
                      [Rule.of(["get", "list", "watch"], ["pods", "endpointslices"]),
                       Rule.of(["create"], ["selfsubjectaccessreviews"])])
    async with await api_client_for(sandbox, tmp_path / "kc", token="prober") as api:
        auth = client.AuthorizationV1Api(api)

        async def allowed(verb: str, resource: str, subresource: str = "") -> Any:
            review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=NS, verb=verb, resource=resource, subresource=subresource)))
            return (await auth.create_self_subject_access_review(review)).status

        assert (await allowed("list", "pods")).allowed is True
        denied = await allowed("create", "pods", "eviction")
        assert denied.allowed is False and denied.reason
        core = client.CoreV1Api(api)
        assert len((await core.list_namespaced_pod(NS)).items) == 2
        sandbox.deny("prober", "list", "pods")
        assert (await allowed("list", "pods")).allowed is False
        with pytest.raises(ApiException) as caught:
            await core.list_namespaced_pod(NS)
        assert caught.value.status == 403
        body = json.loads(caught.value.body)
        assert body["message"] == (
            'pods is forbidden: User "system:serviceaccount:kube-system:dns-prober" cannot list '
            'resource "pods" in API group "" in the namespace "kube-system"')


async def test_401_with_a_bad_token(sandbox: Sandbox, tmp_path: Path) -> None:
    async with await api_client_for(sandbox, tmp_path / "kc", token="wrong") as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).list_namespaced_pod(NS)
        assert caught.value.status == 401
        assert json.loads(caught.value.body)["reason"] == "Unauthorized"
