"""The sandbox's wire bodies against the real API server's, as recorded in
the reference (shared/reference/kube-api.md): errors, eviction, watch
expiry, bookmarks and resourceVersion continuity, over raw HTTPS."""

from __future__ import annotations

from typing import Any

from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Http, MakeSandbox, eventually

Obj = dict[str, Any]
PODS = "/api/v1/namespaces/kube-system/pods"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
PROBER = "system:serviceaccount:kube-system:dns-prober"


def status(message: str, reason: str, code: int, details: Obj | None = None) -> Obj:
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def pod_names(sandbox: Sandbox) -> list[str]:
    return sorted(p["metadata"]["name"] for p in sandbox.dns_pods())


async def test_401_with_an_unknown_token(http: Http) -> None:
    code, _, body = await http.call("GET", PODS, token="not-a-token")
    assert code == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


async def test_403_names_user_verb_subresource_and_namespace(sandbox: Sandbox,
                                                             http: Http) -> None:
    sandbox.add_token("prober-token", PROBER, [Rule.of(["get", "list", "watch"], ["pods"], [""])])
    code, _, body = await http.call("POST", f"{PODS}/coredns-abc/eviction",
                                    {"metadata": {"name": "coredns-abc"}}, token="prober-token")
    assert code == 403
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "coredns-abc" is forbidden: User "system:serviceaccount:kube-system:'
                   'dns-prober" cannot create resource "pods/eviction" in API group "" in the '
                   'namespace "kube-system"',
        "reason": "Forbidden", "details": {"name": "coredns-abc", "kind": "pods"}, "code": 403}
    code, _, _ = await http.call("GET", PODS, token="prober-token")
    assert code == 200


async def test_404_for_a_missing_pod(http: Http) -> None:
    code, _, body = await http.call("GET", f"{PODS}/coredns-abc")
    assert code == 404
    assert body == status('pods "coredns-abc" not found', "NotFound", 404,
                          {"name": "coredns-abc", "kind": "pods"})


async def test_409_on_failed_delete_preconditions(sandbox: Sandbox, http: Http) -> None:
    pod = sandbox.dns_pods()[0]
    name, uid, rv = (pod["metadata"][k] for k in ("name", "uid", "resourceVersion"))
    key = f"/registry/pods/kube-system/{name}"
    code, _, body = await http.call("DELETE", f"{PODS}/{name}?gracePeriodSeconds=30",
                                    {"preconditions": {"uid": "u-1"}})
    assert code == 409
    assert body == status(
        f'Operation cannot be fulfilled on pods "{name}": StorageError: invalid object, Code: 4, '
        f"Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in "
        f"precondition: u-1, UID in object meta: {uid}", "Conflict", 409,
        {"name": name, "kind": "pods"})
    code, _, body = await http.call("DELETE", f"{PODS}/{name}",
                                    {"preconditions": {"resourceVersion": "1"}})
    assert code == 409
    assert body["message"].endswith(
        f"Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object "
        f"meta: {rv}")
    assert name in pod_names(sandbox)  # nothing was deleted


async def test_lease_rules_and_bodies(http: Http) -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "dns-prober", "namespace": "kube-system"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                      "renewTime": "2026-01-01T00:00:00.123456+00:00"}}
    code, _, created = await http.call("POST", LEASES, lease)
    assert code == 201
    assert created["spec"]["renewTime"] == "2026-01-01T00:00:00.123456Z"
    code, _, body = await http.call("POST", LEASES, lease)
    assert code == 409
    assert body == status('leases.coordination.k8s.io "dns-prober" already exists',
                          "AlreadyExists", 409, {"name": "dns-prober",
                                                 "group": "coordination.k8s.io",
                                                 "kind": "leases"})
    code, _, body = await http.call("PUT", f"{LEASES}/dns-prober", lease)
    assert code == 422
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert body["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    fresh = {**lease, "metadata": {**lease["metadata"],
                                   "resourceVersion": created["metadata"]["resourceVersion"]}}
    code, _, updated = await http.call("PUT", f"{LEASES}/dns-prober", fresh)
    assert code == 200
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    code, _, body = await http.call("PUT", f"{LEASES}/dns-prober", fresh)  # stale now
    assert code == 409
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on leases.coordination.k8s.io "dns-prober": '
                   "the object has been modified; please apply your changes to the latest "
                   "version and try again",
        "reason": "Conflict",
        "details": {"name": "dns-prober", "group": "coordination.k8s.io", "kind": "leases"},
        "code": 409}
    missing = {**lease, "metadata": {"name": "other", "namespace": "kube-system"}}
    code, _, body = await http.call("PUT", f"{LEASES}/other", missing)
    assert code == 201 and body["metadata"]["name"] == "other"


async def test_eviction_429_from_the_budget_then_201(make_sandbox: MakeSandbox,
                                                     raw_session: Any) -> None:
    sandbox = await make_sandbox(replicas=1, pdb_min_available=1, grace=5)
    http = Http(sandbox, raw_session)
    (name,) = pod_names(sandbox)
    await eventually(lambda: _pdb_status(sandbox).get("currentHealthy") == 1)
    code, headers, body = await http.call("POST", f"{PODS}/{name}/eviction",
                                          {"apiVersion": "policy/v1", "kind": "Eviction",
                                           "metadata": {"name": name}})
    assert code == 429
    assert "Retry-After" not in headers
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget",
                                "message": "The disruption budget coredns needs 1 healthy pods "
                                           "and has 1 currently"}]},
        "code": 429}
    code, _, body = await http.call("POST", f"{PODS}/{name}/eviction",
                                    {"metadata": {"name": "another"}})
    assert code == 400
    assert body["message"] == "name in URL does not match name in Eviction object"
    await http.call("PATCH", "/apis/policy/v1/namespaces/kube-system/poddisruptionbudgets/coredns",
                    {"spec": {"minAvailable": 0}},
                    headers={"Content-Type": "application/merge-patch+json"})
    await eventually(lambda: _pdb_status(sandbox).get("disruptionsAllowed") == 1)
    code, headers, body = await http.call("POST", f"{PODS}/{name}/eviction",
                                          {"metadata": {"name": name,
                                                        "namespace": "kube-system"}})
    assert (code, body) == (201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "code": 201})
    pod = next(p for p in sandbox.dns_pods() if p["metadata"]["name"] == name)
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 5


async def test_eviction_429_while_the_budget_is_being_processed(make_sandbox: MakeSandbox,
                                                                raw_session: Any) -> None:
    sandbox = await make_sandbox(replicas=2, pdb_min_available=1)
    http = Http(sandbox, raw_session)
    await eventually(lambda: _pdb_status(sandbox).get("disruptionsAllowed") == 1)
    sandbox.pause_pdb_status()
    code, _, _ = await http.call(
        "PATCH", "/apis/policy/v1/namespaces/kube-system/poddisruptionbudgets/coredns",
        {"spec": {"minAvailable": 0}}, headers={"Content-Type": "application/merge-patch+json"})
    assert code == 200
    name = pod_names(sandbox)[0]
    code, headers, body = await http.call("POST", f"{PODS}/{name}/eviction",
                                          {"metadata": {"name": name}})
    assert code == 429
    assert headers["Retry-After"] == "10"
    assert body["details"] == {
        "causes": [{"reason": "DisruptionBudget", "message": "The disruption budget coredns is "
                    "still being processed by the server."}], "retryAfterSeconds": 10}


async def test_410_in_stream_expired_and_gone_and_at_connect(sandbox: Sandbox,
                                                             http: Http) -> None:
    old = sandbox.store.rv
    await http.call("POST", LEASES, {"metadata": {"name": "bump"}})
    sandbox.compact_history()
    floor = sandbox.store.rv
    code, events = await http.watch(f"{SLICES}?watch=1&resourceVersion={old}")
    assert code == 200
    assert events == [{"type": "ERROR", "object": status(
        f"too old resource version: {old} ({floor})", "Expired", 410)}]
    sandbox.set_watch_expiry("gone")
    code, events = await http.watch(f"{SLICES}?watch=true&resourceVersion={old}")
    assert events == [{"type": "ERROR", "object": status(
        f"too old resource version: {old} ({floor})", "Gone", 410)}]
    sandbox.set_watch_expiry("http")
    code, _, body = await http.call("GET", f"{SLICES}?watch=True&resourceVersion={old}")
    assert code == 410
    assert body == status("The resourceVersion for the provided watch is too old.", "Expired",
                          410)


async def test_bookmark_shape_and_cadence(make_sandbox: MakeSandbox, raw_session: Any) -> None:
    sandbox = await make_sandbox(bookmark_interval=0.2)
    http = Http(sandbox, raw_session)
    rv = sandbox.store.rv
    code, events = await http.watch(
        f"{SLICES}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=1")
    assert code == 200
    assert len(events) >= 3
    assert all(e["type"] == "BOOKMARK" for e in events)
    assert events[0]["object"] == {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                                   "metadata": {"resourceVersion": str(rv)}, "endpoints": None}
    code, events = await http.watch(f"{SLICES}?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    assert (code, events) == (200, [])  # no bookmarks unless asked for


async def test_bookmark_shortly_before_the_deadline(make_sandbox: MakeSandbox,
                                                    raw_session: Any) -> None:
    sandbox = await make_sandbox(bookmark_interval=60.0, bookmark_lead=0.5)
    http = Http(sandbox, raw_session)
    _, events = await http.watch(
        f"{PODS}?watch=1&allowWatchBookmarks=True&resourceVersion={sandbox.store.rv}"
        "&timeoutSeconds=1")
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"]["kind"] == "Pod"


async def test_watch_from_a_list_rv_sees_exactly_the_later_changes(sandbox: Sandbox,
                                                                   http: Http) -> None:
    await http.call("POST", LEASES, {"metadata": {"name": "before"}})
    _, _, listing = await http.call("GET", LEASES)
    list_rv = int(listing["metadata"]["resourceVersion"])
    assert [i["metadata"]["name"] for i in listing["items"]] == ["before"]
    assert "kind" not in listing["items"][0]
    _, _, after = await http.call("POST", LEASES, {"metadata": {"name": "after"}})
    after["spec"] = {"holderIdentity": "me"}
    await http.call("PUT", f"{LEASES}/after", after)
    await http.call("DELETE", f"{LEASES}/after")
    code, events = await http.watch(f"{LEASES}?watch=1&resourceVersion={list_rv}", stop_after=3)
    assert code == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert list_rv < rvs[0] < rvs[1] < rvs[2] <= sandbox.store.rv
    assert all(e["object"]["kind"] == "Lease" for e in events)


async def test_watch_from_now_starts_with_synthetic_added(http: Http) -> None:
    code, events = await http.watch(f"{SLICES}?watch=1&timeoutSeconds=0.5")
    assert code == 200
    assert [e["type"] for e in events] == ["ADDED"]
    assert events[0]["object"]["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"


async def test_selector_transitions_are_deleted_and_added(sandbox: Sandbox, http: Http) -> None:
    await http.call("POST", LEASES, {"metadata": {"name": "moving", "labels": {"app": "x"}}})
    rv = sandbox.store.rv
    merge = {"Content-Type": "application/merge-patch+json"}
    await http.call("PATCH", f"{LEASES}/moving", {"metadata": {"labels": {"app": "y"}}},
                    headers=merge)
    await http.call("PATCH", f"{LEASES}/moving", {"metadata": {"labels": {"app": "x"}}},
                    headers=merge)
    code, events = await http.watch(
        f"{LEASES}?watch=1&resourceVersion={rv}&labelSelector=app%20in%20(x,z)", stop_after=2)
    assert code == 200
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
    assert events[0]["object"]["metadata"]["labels"] == {"app": "x"}


async def test_selectors_on_list(http: Http) -> None:
    for name, tier in (("a", "one"), ("b", "two"), ("c", None)):
        labels = {"tier": tier} if tier else {}
        await http.call("POST", LEASES, {"metadata": {"name": name, "labels": labels}})

    async def names(query: str) -> list[str]:
        code, _, body = await http.call("GET", f"{LEASES}?{query}")
        assert code == 200, body
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names("labelSelector=tier%3Done") == ["a"]
    assert await names("labelSelector=tier%3D%3Done") == ["a"]
    assert await names("labelSelector=tier%21%3Done") == ["b", "c"]
    assert await names("labelSelector=tier%20notin%20(one)") == ["b", "c"]
    assert await names("labelSelector=tier") == ["a", "b"]
    assert await names("labelSelector=%21tier") == ["c"]
    assert await names("labelSelector=tier,tier%21%3Dtwo") == ["a"]
    assert await names("fieldSelector=metadata.name%3Db") == ["b"]
    code, _, body = await http.call("GET", f"{LEASES}?fieldSelector=spec.holderIdentity%3Dx")
    assert code == 400 and body["reason"] == "BadRequest"
    assert "field label not supported: spec.holderIdentity" in body["message"]
    code, _, body = await http.call("GET", f"{PODS}?fieldSelector=status.phase%3DRunning")
    assert code == 200 and len(body["items"]) == 2


async def test_legacy_endpoints_carry_the_deprecation_warning(http: Http) -> None:
    code, headers, body = await http.call("GET", "/api/v1/namespaces/kube-system/endpoints/"
                                                 "kube-dns")
    assert code == 200
    assert headers["Warning"] == ('299 - "v1 Endpoints is deprecated in v1.33+; use '
                                  'discovery.k8s.io/v1 EndpointSlice"')
    assert len(body["subsets"][0]["addresses"]) == 2


async def test_injected_failures_are_status_bodies(sandbox: Sandbox, http: Http) -> None:
    sandbox.fail_requests(2, code=503, path_contains="endpointslices")
    code, _, _ = await http.call("GET", PODS)
    assert code == 200
    for _ in range(2):
        code, _, body = await http.call("GET", SLICES)
        assert code == 503 and body["kind"] == "Status" and body["code"] == 503
    code, _, _ = await http.call("GET", SLICES)
    assert code == 200



def _pdb_status(sandbox: Sandbox) -> Obj:
    from corednsprobe.sandbox.registry import PDBS

    pdb = sandbox.store.get(PDBS, "kube-system", "coredns")
    return (pdb or {}).get("status") or {}
