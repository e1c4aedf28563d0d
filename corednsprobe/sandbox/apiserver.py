"""The sandbox's Kubernetes API server over HTTP (aiohttp).

Owns: URL routing for ``/api`` and ``/apis``, discovery documents, bearer-token
authentication and authorization (401/403 Status bodies), LIST and the
chunked WATCH stream (bookmarks, timeouts, 410 in its three forms), the
``Warning`` header of legacy Endpoints, and the API-side faults (stalled and
reset watches, injected 5xx). Never does: decide what a write means (the
registry does) or run controllers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from corednsprobe import logs
from corednsprobe.sandbox import portforward, tables
from corednsprobe.sandbox import resources as R
from corednsprobe.sandbox import status as S
from corednsprobe.sandbox.auth import (
    Attributes,
    Authorizer,
    Principal,
    Request,
    forbidden_reason,
)
from corednsprobe.sandbox.protobuf import ProtobufError, decode_access_review
from corednsprobe.sandbox.registry import Registry
from corednsprobe.sandbox.resources import Resource
from corednsprobe.sandbox.selectors import FieldSelector, LabelSelector, SelectorError
from corednsprobe.sandbox.store import Store, TooOld, Watcher
from corednsprobe.sandbox.workloads import (
    LogOptions,
    PodKind,
    ProcessPods,
    log_refusal,
    pod_kind,
)

Obj = dict[str, Any]
log = logs.get(__name__)

ENDPOINTS_WARNING = ('299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 '
                     'EndpointSlice"')
VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-sandbox", "gitCommit": "sandbox",
    "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3",
    "compiler": "gc", "platform": "linux/amd64",
}


def truthy(value: str | None) -> bool:
    return value in ("true", "True", "1")


def _int_param(query: Mapping[str, str], key: str) -> int | None:
    """A query parameter decoded as the API server's parameter codec decodes an
    int64 (strconv.ParseInt), or its 400."""
    raw = query.get(key)
    if raw is None or raw == "":
        return None
    body = raw[1:] if raw[:1] in "+-" else raw
    if not body.isascii() or not body.isdigit():
        raise S.bad_request(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
    value = int(raw)
    if not -(2 ** 63) <= value < 2 ** 63:
        raise S.bad_request(f'strconv.ParseInt: parsing "{raw}": value out of range')
    return value


def log_options(query: Mapping[str, str], name: str) -> LogOptions:
    """PodLogOptions from the query, validated as pkg/apis/core/validation
    ValidatePodLogOptions does (a 422 Invalid naming each bad field)."""
    tail = _int_param(query, "tailLines")
    since = _int_param(query, "sinceSeconds")
    causes = []
    if tail is not None and tail < 0:
        causes.append(("tailLines", f"Invalid value: {tail}: must be greater than or equal to 0"))
    if since is not None and since < 1:
        causes.append(("sinceSeconds", f"Invalid value: {since}: must be greater than 0"))
    if causes:
        listed = [f"{field}: {detail}" for field, detail in causes]
        summary = listed[0] if len(listed) == 1 else f"[{', '.join(listed)}]"
        raise S.ApiError(S.status_body(
            422, "Invalid", f'PodLogOptions "{name}" is invalid: {summary}',
            {"name": name, "kind": "PodLogOptions",
             "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}
                        for field, detail in causes]}))
    since_ns = None if since is None else time.time_ns() - since * 1_000_000_000
    return LogOptions(tail=tail, since_ns=since_ns, timestamps=truthy(query.get("timestamps")))


@dataclass
class WatchTimings:
    bookmark_interval: float = 60.0  # seconds between BOOKMARK events
    bookmark_lead: float = 2.0  # one more BOOKMARK this long before the watch deadline
    default_timeout: tuple[float, float] = (1800.0, 3600.0)  # when timeoutSeconds is absent
    # A proxy in front that ends every watch cleanly after this long (None: none does).
    max_timeout: float | None = None


@dataclass
class ApiFaults:
    """Faults of the API server itself, switched on through the Sandbox."""

    expiry_mode: str = "expired"  # "expired" | "gone" (in-stream ERROR) or "http" (410 at connect)
    fail_remaining: int = 0
    fail_code: int = 500
    fail_path: str = ""
    reset_new_watches: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()

    def take_failure(self, path: str) -> S.ApiError | None:
        if self.fail_remaining <= 0 or (self.fail_path and self.fail_path not in path):
            return None
        self.fail_remaining -= 1
        message = ("the server is currently unable to handle the request"
                   if self.fail_code == 503 else "injected fault")
        return S.internal_error(message, self.fail_code)


@dataclass(frozen=True, slots=True)
class Target:
    """What a resource URL names."""

    res: Resource
    namespace: str | None  # None: all namespaces (collections) or cluster-scoped
    name: str = ""
    subresource: str = ""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  ) -> web.Response:
    return web.Response(text=json.dumps(body) + "\n", status=status, headers=headers,
                        content_type="application/json")


def error_response(err: S.ApiError, headers: dict[str, str] | None = None) -> web.Response:
    out = dict(headers or {})
    if err.retry_after > 0:
        out["Retry-After"] = str(err.retry_after)
    return json_response(err.body, err.code, out)


def strip_type(obj: Obj) -> Obj:
    """List items carry no kind or apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def parse_target(group: str, version: str, parts: list[str]) -> Target | None:
    """Resource URL segments after ``/api/v1`` or ``/apis/<group>/<version>``."""
    namespace: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        namespace, parts = parts[1], parts[2:]
    if not parts or len(parts) > 3:
        return None
    res = R.find(group, version, parts[0])
    if res is None or (namespace is not None and not res.namespaced):
        return None
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 else ""
    if sub and res.subresource(sub) is None:
        return None
    if res.namespaced and name and namespace is None:
        return None
    return Target(res, namespace, name, sub)


def verb_of(method: str, target: Target, watch: bool) -> str:
    if method == "GET":
        return "watch" if watch else ("get" if target.name else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if target.name else "deletecollection"}.get(method, method.lower())


class ApiServer:
    def __init__(self, store: Store, registry: Registry, authorizer: Authorizer,
                 timings: WatchTimings | None = None, faults: ApiFaults | None = None,
                 pod_log: str = "", unserved: frozenset[str] = frozenset(),
                 token_minter: Callable[[str, str], str] | None = None,
                 processes: ProcessPods | None = None) -> None:
        self.processes = processes  # the logs of project-image pods that run for real
        self.dns_port = 53  # where a pod's port 53 really listens (the DNS backend's port)
        # "" serves pods/portforward; "kubelet": the kubelet fails it on the error channel;
        # "500": the API server fails the upgrade (a proxy or a kubelet it cannot reach)
        self.portforward_refusal = ""
        self.token_minter = token_minter  # (namespace, account) → a ServiceAccount token
        self.unserved = unserved  # group versions ("discovery.k8s.io/v1") answered with 404
        self.store = store
        self.registry = registry
        self.authorizer = authorizer
        self.timings = timings or WatchTimings()
        self.faults = faults or ApiFaults()
        self.pod_log = pod_log
        self._open_watches: dict[asyncio.Task[Any], asyncio.Transport | None] = {}

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/apis", self._groups)
        app.router.add_route("*", "/api/{tail:.*}", self._core)
        app.router.add_route("*", "/apis/{tail:.*}", self._grouped)

    # faults --------------------------------------------------------------

    def reset_open_watches(self) -> int:
        """Abort every open watch connection with no terminating chunk."""
        count = 0
        for task, transport in list(self._open_watches.items()):
            if transport is not None:
                transport.abort()
            task.cancel()
            count += 1
        return count

    async def close(self) -> None:
        tasks = list(self._open_watches)
        for task in tasks:
            task.cancel()
        self.faults.flowing.set()

    # pipeline ------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not (request.path.startswith("/api") or request.path == "/version"):
            response: web.StreamResponse = await handler(request)
            return response
        try:
            if (failure := self.faults.take_failure(request.path_qs)) is not None:
                raise failure
            principal = self.authorizer.authenticate(request.headers.get("Authorization"))
            if principal is None and request.path != "/version":  # /version is public
                raise S.unauthorized()
            response = await handler(request)
            return response
        except S.ApiError as err:
            return error_response(err)
        except ConnectionError as exc:  # the client went away while we answered it
            log.debug("client_gone", path=request.path, error=str(exc) or type(exc).__name__)
            return web.Response(status=499)

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(VERSION_INFO)

    async def _api_versions(self, request: web.Request) -> web.Response:
        host = request.host
        return json_response({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [
                                  {"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})

    async def _groups(self, request: web.Request) -> web.Response:
        return json_response(R.group_list(self.unserved))

    async def _core(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if parts[:1] != ["v1"]:
            raise S.path_not_found()
        return await self._resource_request(request, "", "v1", parts[1:])

    async def _grouped(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        groups = R.group_list(self.unserved)["groups"]
        if len(parts) == 1:
            group = next((g for g in groups if g["name"] == parts[0]), None)
            if group is None:
                raise S.path_not_found()
            return json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
        if len(parts) < 2 or f"{parts[0]}/{parts[1]}" in self.unserved:
            raise S.path_not_found()
        return await self._resource_request(request, parts[0], parts[1], parts[2:])

    async def _resource_request(self, request: web.Request, group: str, version: str,
                                parts: list[str]) -> web.StreamResponse:
        if not parts:
            listing = R.resource_list(group, version)
            if listing is None:
                raise S.path_not_found()
            return json_response(listing)
        target = parse_target(group, version, parts)
        if target is None:
            raise S.path_not_found()
        watch = truthy(request.query.get("watch"))
        verb = verb_of(request.method, target, watch)
        self._authorize(self._principal(request), target, verb,
                        self._name_from_selector(request, verb))
        headers = {"Warning": ENDPOINTS_WARNING} if target.res.plural == "endpoints" else {}
        try:
            return await self._dispatch(request, target, verb, headers)
        except S.ApiError as err:
            return error_response(err, headers)

    def _principal(self, request: web.Request) -> Principal:
        """The caller; the middleware already turned unknown tokens away."""
        principal = self.authorizer.authenticate(request.headers.get("Authorization"))
        if principal is None:
            raise S.unauthorized()
        return principal

    @staticmethod
    def _name_from_selector(request: web.Request, verb: str) -> str:
        """A list or watch names one object through ``fieldSelector=metadata.name=x``
        (requestinfo.go), so that a rule's resourceNames can allow it."""
        if verb not in ("list", "watch"):
            return ""
        terms = (request.query.get("fieldSelector") or "").split(",")
        names = [t.split("=", 1)[1].lstrip("=") for t in terms
                 if t.startswith("metadata.name=") and "!" not in t]
        return names[0] if len(names) == 1 and len(terms) == 1 else ""

    def _authorize(self, principal: Principal, target: Target, verb: str,
                   selected: str = "") -> None:
        sub = target.res.subresource(target.subresource) if target.subresource else None
        attrs = Attributes(verb, target.res.group, target.res.plural, target.subresource,
                           target.namespace or "", target.name or selected)
        allowed = Authorizer.decide(principal, attrs).allowed
        self.authorizer.requests.append(Request(principal.user, attrs, allowed))
        if not allowed:
            raise S.forbidden(target.res.plural, target.name, target.res.group,
                              forbidden_reason(principal.user, attrs))
        allowed_verbs = sub.verbs if sub else target.res.verbs
        if verb not in allowed_verbs:
            raise S.method_not_allowed(verb)

    @staticmethod
    def _table_version(request: web.Request, target: Target) -> str | None:
        """The Table version asked for (``as=Table;v=v1;g=meta.k8s.io``), or None."""
        if target.subresource:
            return None
        try:
            version = tables.wants_table(request.headers.get("Accept"))
        except tables.NotAcceptable:
            raise S.not_acceptable() from None
        include = request.query.get("includeObject", "Metadata") or "Metadata"
        if version is not None and include not in ("Metadata", "Object", "None"):
            raise S.bad_request(f'unrecognized includeObject value: "{include}"')
        return version

    def _as_table(self, request: web.Request, target: Target, objects: list[Obj], rv: str,
                  version: str) -> Obj:
        return tables.table(target.res.plural, objects, rv,
                            request.query.get("includeObject") or "Metadata", version=version)

    async def _dispatch(self, request: web.Request, target: Target, verb: str,
                        headers: dict[str, str]) -> web.StreamResponse:
        res, ns, name = target.res, target.namespace or "", target.name
        table = self._table_version(request, target) if verb in ("get", "list", "watch") \
            else None
        if verb == "watch":
            return await self._watch(request, target, headers, table)
        if verb == "list":
            listing = self._list(request, target)
            if table is not None:
                listing = self._as_table(request, target, listing["items"],
                                         listing["metadata"]["resourceVersion"], table)
            return json_response(listing, headers=headers)
        if target.subresource == "portforward" and verb in ("get", "create"):
            return await portforward.serve(request, self.store.must_get(res, ns, name),
                                           self.dns_port, self.portforward_refusal)
        if verb == "get" and target.subresource == "log":
            options = log_options(request.query, name)  # decoded before the pod is read
            return await self._log(request, self.store.must_get(res, ns, name), options)
        if verb == "get":
            obj = self.store.must_get(res, ns, name)
            if table is not None:
                obj = self._as_table(request, target, [obj], obj["metadata"]["resourceVersion"],
                                     table)
            return json_response(obj, headers=headers)
        body: Any
        if verb == "delete":
            grace = request.query.get("gracePeriodSeconds")
            body = await self._body(request, required=False)
            result = self.registry.delete(res, ns, name, body,
                                          int(grace) if grace is not None else None)
            return json_response(result, headers=headers)
        if target.subresource == "token" and \
                request.content_type == "application/vnd.kubernetes.protobuf":
            body = {}  # kubectl create token: a protobuf TokenRequest; defaults suffice
        else:
            body = await self._body(request)
        if verb == "create":
            return self._create(request, target, body, headers)
        if verb == "update":
            obj, created = self.registry.update(res, ns, name, body)
            return json_response(obj, 201 if created else 200, headers)
        if verb == "patch":
            obj = self.registry.patch(res, ns, name, body, request.content_type)
            return json_response(obj, headers=headers)
        raise S.method_not_allowed(verb)

    def _create(self, request: web.Request, target: Target, body: Obj,
                headers: dict[str, str]) -> web.Response:
        if target.subresource == "eviction":
            return json_response(self.registry.evict(target.namespace or "", target.name, body),
                                 201)
        if target.subresource == "token":
            return json_response(self._token_request(target, body), 201)
        if target.res.plural == "selfsubjectaccessreviews":
            return json_response(self._review(self._principal(request), body), 201)
        obj = self.registry.create(target.res, target.namespace or "", body)
        return json_response(obj, 201, headers)

    @staticmethod
    async def _body(request: web.Request, required: bool = True) -> Any:
        raw = await request.read()
        if not raw:
            if required:
                raise S.bad_request("the request body is empty")
            return {}
        if request.content_type == "application/vnd.kubernetes.protobuf":
            try:
                return decode_access_review(raw)
            except ProtobufError:
                raise S.unsupported_media_type(request.content_type) from None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise S.bad_request(f"the body of the request could not be decoded: {exc}") from None

    async def _log(self, request: web.Request, pod: Obj,
                   options: LogOptions) -> web.StreamResponse:
        """pods/log: the container's output (CoreDNS pods: their banner), or the
        kubelet's 400 while the container is waiting; ``follow`` streams to its exit."""
        name = pod["metadata"]["name"]
        containers = [c.get("name", "") for c in pod["spec"].get("containers") or ()]
        container = request.query.get("container") or ""
        if not container:
            if len(containers) != 1:
                raise S.bad_request(f"a container name must be specified for pod {name}, "
                                    f"choose one of: [{' '.join(containers)}]")
            container = containers[0]
        elif container not in containers:
            raise S.bad_request(f"container {container} is not valid for pod {name}")
        if pod_kind(pod) is PodKind.DNS:
            return web.Response(text=self.pod_log, content_type="text/plain")
        namespace = pod["metadata"]["namespace"]
        processes = self.processes
        if processes is None or (namespace, name) not in processes.logs:
            raise S.bad_request(log_refusal(pod, container) or
                                f'container "{container}" in pod "{name}" is waiting to '
                                "start: ContainerCreating")
        if not truthy(request.query.get("follow")):
            return web.Response(body=processes.read(namespace, name, options),
                                content_type="text/plain")
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            async for chunk in processes.follow(namespace, name, pod["metadata"]["uid"],
                                                options):
                await response.write(chunk)
            await response.write_eof()
        return response

    def _token_request(self, target: Target, body: Obj) -> Obj:
        """TokenRequest (``kubectl create token``): a token of the ServiceAccount."""
        namespace, name = target.namespace or "", target.name
        self.store.must_get(target.res, namespace, name)
        if self.token_minter is None:
            raise S.method_not_allowed("create")
        spec = dict(body.get("spec") or {})
        spec.setdefault("audiences", ["https://kubernetes.default.svc.cluster.local"])
        spec.setdefault("expirationSeconds", 3600)
        spec.setdefault("boundObjectRef", None)
        expires = datetime.now(UTC) + timedelta(seconds=int(spec["expirationSeconds"]))
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
                "spec": spec,
                "status": {"token": self.token_minter(namespace, name),
                           "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def _review(self, principal: Principal, body: Obj) -> Obj:
        spec = body.get("spec") or {}
        attrs_in = spec.get("resourceAttributes")
        if attrs_in is None:
            decision_allowed = any(r.allows(Attributes("*", "*", "*"))
                                   for r in principal.rules)
            status: Obj = {"allowed": decision_allowed}
        else:
            attrs = Attributes(attrs_in.get("verb", ""), attrs_in.get("group", ""),
                               attrs_in.get("resource", ""), attrs_in.get("subresource", ""),
                               attrs_in.get("namespace", ""), attrs_in.get("name", ""))
            decision = Authorizer.decide(principal, attrs)
            status = {"allowed": decision.allowed, "reason": decision.reason}
        return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    # list and watch --------------------------------------------------------

    def _selectors(self, request: web.Request, res: Resource,
                   ) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = LabelSelector.parse(request.query.get("labelSelector"))
            fields = FieldSelector.parse(request.query.get("fieldSelector"), res.extra_fields)
        except SelectorError as exc:
            where = f'"{res.api_version if res.group else "/v1"}, Resource={res.plural}"'
            raise S.bad_request(
                f"Unable to find {where} that match label selector "
                f"\"{request.query.get('labelSelector', '')}\", field selector "
                f"\"{request.query.get('fieldSelector', '')}\": {exc}") from None
        return labels, fields

    def _list(self, request: web.Request, target: Target) -> Obj:
        labels, fields = self._selectors(request, target.res)
        items, rv = self.store.list(target.res, target.namespace, labels, fields)
        return {"kind": target.res.list_kind, "apiVersion": target.res.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": [strip_type(o) for o in items]}

    async def _watch(self, request: web.Request, target: Target,
                     headers: dict[str, str], table: str | None = None) -> web.StreamResponse:
        labels, fields = self._selectors(request, target.res)
        raw_rv = request.query.get("resourceVersion", "")
        try:
            since = None if raw_rv in ("", "0") else int(raw_rv)
        except ValueError:
            raise S.bad_request(f'invalid resource version "{raw_rv}"') from None
        try:
            watcher = self.store.watch(target.res, target.namespace, labels, fields, since)
        except TooOld as too_old:
            return await self._too_old(request, too_old, headers)
        task = asyncio.current_task()
        assert task is not None
        self._open_watches[task] = request.transport
        try:
            return await self._stream(request, target, watcher, headers, table)
        finally:
            self._open_watches.pop(task, None)
            self.store.unwatch(watcher)

    async def _too_old(self, request: web.Request, too_old: TooOld,
                       headers: dict[str, str]) -> web.StreamResponse:
        log.info("watch_expired", requested=too_old.requested, oldest=too_old.oldest,
                 mode=self.faults.expiry_mode)
        if self.faults.expiry_mode == "http":
            return error_response(S.ApiError(S.expired_at_connect()), headers)
        make = S.gone if self.faults.expiry_mode == "gone" else S.expired
        response = await self._open_stream(request, headers)
        await self._send(response, "ERROR", make(too_old.requested, too_old.oldest))
        await response.write_eof()
        return response

    @staticmethod
    async def _open_stream(request: web.Request, headers: dict[str, str],
                           ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, kind: str, obj: Obj) -> None:
        await response.write((json.dumps({"type": kind, "object": obj}) + "\n").encode())

    def _timeout(self, request: web.Request) -> float:
        raw = request.query.get("timeoutSeconds")
        if raw is None:
            chosen = random.uniform(*self.timings.default_timeout)
        else:
            try:
                chosen = max(0.0, float(raw))
            except ValueError:
                raise S.bad_request(f'invalid timeoutSeconds "{raw}"') from None
        cutoff = self.timings.max_timeout
        return chosen if cutoff is None else min(chosen, cutoff)

    def _next_bookmark(self, now: float, deadline: float) -> float:
        regular = now + self.timings.bookmark_interval
        before_end = deadline - self.timings.bookmark_lead
        return before_end if now < before_end < regular else regular

    async def _stream(self, request: web.Request, target: Target, watcher: Watcher,
                      headers: dict[str, str], table: str | None) -> web.StreamResponse:
        res = target.res
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout(request)
        bookmarks = truthy(request.query.get("allowWatchBookmarks"))
        response = await self._open_stream(request, headers)
        if self.faults.reset_new_watches > 0:
            self.faults.reset_new_watches -= 1
            if request.transport is not None:
                request.transport.abort()
            return response
        next_bookmark = self._next_bookmark(loop.time(), deadline) if bookmarks else math.inf
        try:
            while True:
                await self.faults.flowing.wait()
                now = loop.time()
                if now >= deadline:
                    break
                try:
                    async with asyncio.timeout_at(min(deadline, next_bookmark)):
                        kind, obj = await watcher.queue.get()
                except TimeoutError:
                    if loop.time() >= next_bookmark and watcher.queue.empty():
                        await self.faults.flowing.wait()
                        await self._send(response, "BOOKMARK", self._bookmark(res))
                        next_bookmark = self._next_bookmark(loop.time(), deadline)
                    continue
                await self.faults.flowing.wait()
                if table is not None:  # each event's object: a Table of one row
                    obj = self._as_table(request, target, [obj],
                                         obj["metadata"]["resourceVersion"], table)
                await self._send(response, kind, obj)
            await response.write_eof()
        except ConnectionError:
            log.debug("watch_client_gone", resource=res.plural)
        return response

    def _bookmark(self, res: Resource) -> Obj:
        obj: Obj = {"kind": res.kind, "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(self.store.rv)}}
        if res.plural == "endpointslices":
            obj["endpoints"] = None
        return obj
