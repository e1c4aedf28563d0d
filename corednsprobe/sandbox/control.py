"""The sandbox's fault control API: ``/sandbox/v1/...`` on the API server's address.

Owns: turning small JSON requests into calls of the ``Sandbox`` fault API,
for people and for tests that drive a sandbox in another process. Outside the
Kubernetes paths, so no Kubernetes authentication; it is served only on the
sandbox's own (loopback) listen address. Never does: anything the Python API
cannot do.

    GET  /sandbox/v1/state
    POST /sandbox/v1/pods/{name}/fault     {"fault": "drop"}
    POST /sandbox/v1/slots/{slot}/fault    {"fault": "delay:300"}
    POST /sandbox/v1/pods/fault            {"fault": "servfail"}      (every pod)
    POST /sandbox/v1/service/fault         {"broken": true}
    POST /sandbox/v1/api/compact           {}
    POST /sandbox/v1/api/stall             {"stalled": true}
    POST /sandbox/v1/api/reset             {"nextWatches": 0}
    POST /sandbox/v1/api/fail              {"count": 3, "code": 503, "pathContains": "pods"}
    POST /sandbox/v1/api/watch-expiry      {"mode": "expired" | "gone" | "http"}
    POST /sandbox/v1/api/pdb-status        {"paused": true}
    POST /sandbox/v1/tokens                {"token": "t", "user": "u", "rules": [...]}
    POST /sandbox/v1/tokens/{token}/deny   {"verb": "create", "resource": "pods/eviction"}
    POST /sandbox/v1/serviceaccounts/{namespace}/{name}/token   {"kubeconfig": "/path"}
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from corednsprobe.sandbox.auth import Rule

if TYPE_CHECKING:
    from corednsprobe.sandbox.cluster import Sandbox

Obj = dict[str, Any]
Action = Callable[["Sandbox", web.Request, Obj], Awaitable[Obj]]
PREFIX = "/sandbox/v1"


def _reply(body: Obj, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body) + "\n", status=status,
                        content_type="application/json")


async def _pod_fault(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    await sandbox.set_pod_fault(request.match_info["name"], str(body["fault"]))
    return sandbox.state()


async def _slot_fault(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    await sandbox.set_slot_fault(int(request.match_info["slot"]), str(body["fault"]))
    return sandbox.state()


async def _all_fault(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    await sandbox.set_all_pods_fault(str(body["fault"]))
    return sandbox.state()


async def _service_fault(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    await sandbox.set_service_broken(bool(body.get("broken", True)))
    return sandbox.state()


async def _compact(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    sandbox.compact_history()
    return {"compactedTo": sandbox.store.floor}


async def _stall(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    sandbox.stall_watches(bool(body.get("stalled", True)))
    return {"stalled": bool(body.get("stalled", True))}


async def _reset(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    return {"reset": sandbox.reset_connections(int(body.get("nextWatches", 0)))}


async def _fail(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    sandbox.fail_requests(int(body.get("count", 1)), int(body.get("code", 500)),
                          str(body.get("pathContains", "")))
    return {"failing": int(body.get("count", 1))}


async def _expiry(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    sandbox.set_watch_expiry(str(body["mode"]))
    return {"mode": body["mode"]}


async def _pdb_status(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    sandbox.pause_pdb_status(bool(body.get("paused", True)))
    return {"paused": bool(body.get("paused", True))}


async def _add_token(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    rules = [Rule.from_json(r) for r in body.get("rules", ())]
    sandbox.add_token(str(body["token"]), str(body["user"]), rules)
    return {"user": body["user"], "rules": len(rules)}


async def _deny(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    sandbox.deny(request.match_info["token"], str(body["verb"]), str(body["resource"]),
                 str(body.get("group", "")))
    return {"denied": f"{body['verb']} {body['resource']}"}


async def _service_account_token(sandbox: Sandbox, request: web.Request, body: Obj) -> Obj:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    reply: Obj = {"user": f"system:serviceaccount:{namespace}:{name}"}
    if body.get("kubeconfig"):
        path = sandbox.write_service_account_kubeconfig(str(body["kubeconfig"]), namespace, name)
        reply["kubeconfig"] = str(path)
    else:
        reply["token"] = sandbox.mint_token(namespace, name)
    return reply


_ACTIONS: dict[str, Action] = {
    "/pods/{name}/fault": _pod_fault, "/slots/{slot}/fault": _slot_fault,
    "/pods/fault": _all_fault, "/service/fault": _service_fault, "/api/compact": _compact,
    "/api/stall": _stall, "/api/reset": _reset, "/api/fail": _fail,
    "/api/watch-expiry": _expiry, "/api/pdb-status": _pdb_status, "/tokens": _add_token,
    "/tokens/{token}/deny": _deny,
    "/serviceaccounts/{namespace}/{name}/token": _service_account_token,
}


def _handler(sandbox: Sandbox, action: Action) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            raw = await request.read()
            body = json.loads(raw) if raw else {}
            return _reply(await action(sandbox, request, body))
        except (KeyError, ValueError, TypeError) as exc:
            return _reply({"error": f"{type(exc).__name__}: {exc}"}, 400)

    return handle


def routes(app: web.Application, sandbox: Sandbox) -> None:
    async def state(request: web.Request) -> web.Response:
        return _reply(sandbox.state())

    app.router.add_get(f"{PREFIX}/state", state)
    for path, action in _ACTIONS.items():
        app.router.add_post(f"{PREFIX}{path}", _handler(sandbox, action))
