"""The one edge to the Kubernetes API: every request, its deadline, and its error.

Owns: the raw request (``send``/``request``: a path, query and body through the
kubernetes_asyncio ``ApiClient``'s configuration, authentication and session,
with a deadline, the answer unread for streams) and the typed one (``call``: a
generated ``CoreV1Api``/``CoordinationV1Api``/``AuthorizationV1Api`` method
with a deadline); the one exception they raise for an error answer,
``ApiError``, and the one parser of the API server's Status bodies behind it.
Never does: retry, log, or decide what an answer means for its caller.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from multidict import CIMultiDict

Obj = dict[str, Any]
T = TypeVar("T")
Query = Sequence[tuple[str, str]]
DEFAULT_DEADLINE = 30.0

__all__ = ["DEFAULT_DEADLINE", "ApiClient", "ApiError", "Obj", "call", "metadata", "request",
           "send", "status_body"]


def metadata(obj: Any) -> Obj:
    """An object's metadata; {} for anything that has none that can be read."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def status_body(raw: bytes | str | Obj | None) -> Obj | None:
    """The JSON object of an answer (a Status, usually); None when it is not one."""
    if isinstance(raw, dict):
        return raw
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        loaded = json.loads(text or "{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else {}


class ApiError(Exception):
    """An error answer of the API server, read from its Status body.

    ``message`` is the Status message, else the HTTP reason phrase, else the
    start of a body that is not JSON; ``headers`` keeps Retry-After.
    """

    def __init__(self, status: int, reason: str, message: str, body: Obj | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        self.headers: Mapping[str, str] = CIMultiDict(headers or {})  # any letter case
        super().__init__(f"{status} {reason}: {message}")

    @classmethod
    def from_status(cls, status: int, raw: bytes | str | Obj | None, *, phrase: str = "",
                    headers: Mapping[str, str] | None = None) -> ApiError:
        body = status_body(raw)
        if body is None:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            return cls(status, phrase or "Unknown", phrase or text.strip()[:200],
                       headers=headers)
        try:
            code = int(body.get("code") or status)
        except (TypeError, ValueError):
            code = status
        return cls(code, str(body.get("reason") or phrase or "Unknown"),
                   str(body.get("message") or phrase or ""), body, headers)

    @classmethod
    def from_exception(cls, exc: ApiException) -> ApiError:
        """The generated client's exception, read the same way."""
        headers: Any = exc.headers or {}
        return cls.from_status(int(exc.status or 0), exc.body, phrase=str(exc.reason or ""),
                               headers={str(k): str(v) for k, v in headers.items()})

    @property
    def expired(self) -> bool:
        return self.status == 410


async def send(api: ApiClient, method: str, path: str, *, query: Query = (),
               body: Obj | None = None,
               deadline: float | aiohttp.ClientTimeout = DEFAULT_DEADLINE,
               ) -> aiohttp.ClientResponse:
    """One raw request; the caller reads (and closes) the answer: ``async with``.

    Raises ``ApiError`` for an answer outside 2xx (its body read and closed),
    aiohttp's errors and ``TimeoutError`` for no answer.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    timeout = deadline if isinstance(deadline, aiohttp.ClientTimeout) \
        else aiohttp.ClientTimeout(total=deadline)
    resp: aiohttp.ClientResponse = await api.call_api(
        path, method, query_params=list(query), header_params=headers, body=body,
        auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout)
    if resp.status // 100 != 2:
        async with resp:
            raw = await resp.read()
        raise ApiError.from_status(resp.status, raw, headers=dict(resp.headers))
    return resp


async def request(api: ApiClient, method: str, path: str, *, query: Query = (),
                  body: Obj | None = None, deadline: float = DEFAULT_DEADLINE) -> Obj:
    """One raw request whose answer is a JSON object (ValueError when it is not)."""
    async with await send(api, method, path, query=query, body=body, deadline=deadline) as resp:
        raw = await resp.read()
    loaded = json.loads(raw)
    if not isinstance(loaded, dict):
        raise ValueError(f"not a JSON object: {raw[:200]!r}")
    return loaded


async def call(method: Callable[..., Awaitable[T]], *args: Any, deadline: float,
               **kwargs: Any) -> T:
    """A typed client method with a deadline; its ApiException raised as ``ApiError``."""
    try:
        return await method(*args, _request_timeout=deadline, **kwargs)
    except ApiException as exc:
        raise ApiError.from_exception(exc) from None
