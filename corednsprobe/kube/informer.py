"""Informer: list, then watch from the list's resourceVersion, for one kind of object.

Owns: keeping an in-memory copy of the objects a path and selectors name, in
step with the API server, forever: watch with bookmarks and a jittered
server-side timeout; an inactivity guard (reset by every event, bookmarks
included) that ends a silent watch and relists (a stream can stall while
lists still work, so watching again is not enough); a relist on 410 Expired/Gone (in the
stream or at connect); capped exponential backoff with jitter on any other
error, and on the two cycles that fail without an error of their own (410
straight after every list; watches that end at once, cleanly and empty), so
that it never spins.
Never does: interpret the objects (its owner is told after every change).

kubernetes_asyncio's own ``Watch`` has no default timeouts, retries a 410 once
with the same stale version and hangs forever on a stalled stream, so the
loop is ours; the client is still used for configuration, authentication and
the HTTP session.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NoReturn

import aiohttp

from corednsprobe import logs
from corednsprobe.backoff import Backoff
from corednsprobe.kube.client import ApiClient, ApiError, Obj, metadata, request, send

log = logs.get(__name__)


@dataclass(frozen=True, slots=True)
class Timing:
    """How patient the informer is; tests shrink these on fast-forwarded time."""

    watch_timeout: tuple[float, float] = (240.0, 300.0)  # server-side, jittered
    inactivity: float = 70.0  # bookmarks come about every 60 s
    request_timeout: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_base, self.backoff_cap)


DEFAULT_TIMING = Timing()
WATCH_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


class WatchClosedEarly(Exception):
    """A watch ended cleanly long before its timeout without a single event."""


class Informer:
    def __init__(
        self,
        api: ApiClient,
        path: str,
        *,
        name: str,
        on_change: Callable[[Mapping[str, Obj]], None],
        on_restart: Callable[[str, str], None] = lambda _name, _reason: None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timing: Timing = DEFAULT_TIMING,
    ) -> None:
        self.api = api
        self.path = path
        self.name = name
        self._on_change = on_change
        self._on_restart = on_restart
        self._selectors = [
            (k, v) for k, v in (("labelSelector", label_selector),
                                ("fieldSelector", field_selector)) if v
        ]
        self.timing = timing
        self._store: dict[str, Obj] = {}
        self.synced = False
        self.last_event_at: float | None = None  # loop time of the last event or list
        self._received = 0  # watch events applied, bookmarks included

    @property
    def objects(self) -> Mapping[str, Obj]:
        return MappingProxyType(self._store)

    async def run(self) -> NoReturn:
        """Keep the store in step until cancelled. Never returns otherwise.

        A relist after 410 is immediate when the watch had made progress;
        410 straight after a list (a lagging watch cache) backs off like any
        failed list, so the list-410 cycle cannot spin.
        """
        failures = 0
        while True:
            try:
                version = await self._list()
                progressed, why = await self._watch_from(version)
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures += 1
                self._restart(_reason(exc))
                delay = self.timing.backoff.delay(failures)
                log.warning("list_failed", informer=self.name, error=str(exc),
                            retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            if why == "stalled":  # it waited a whole inactivity period: relist at once
                failures = 0
                continue
            self._restart("expired")
            failures = 0 if progressed else failures + 1
            if failures:
                delay = self.timing.backoff.delay(failures)
                log.warning("watch_expired_at_once", informer=self.name,
                            retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _watch_from(self, version: str) -> tuple[bool, str]:
        """Watch from ``version`` until the server says it expired (410) or it stalls.

        Returns whether any event arrived meanwhile, and why it ended:
        ``expired``, or ``stalled`` (no event, not even a bookmark, for the
        inactivity period). After a stall the informer relists instead of
        watching again: a stream that stalled once may stall again while
        lists still work, and only a list brings the store up to date. The backoff starts
        afresh after every watch that received events; a watch that ends
        cleanly, early and empty counts as a failure (a proxy closing it, or
        a server answering without a stream), so reconnecting never spins.
        """
        failures = 0
        progressed = False
        while True:
            received, started = self._received, self._now()
            timeout_seconds = int(random.uniform(*self.timing.watch_timeout))
            failure: Exception | None = None
            try:
                version = await self._watch_once(version, timeout_seconds)
                if self._received == received and self._now() - started < timeout_seconds / 2:
                    failure = WatchClosedEarly(f"the watch ended after "
                                               f"{self._now() - started:.1f} s with no event")
            except ApiError as exc:
                if exc.expired:
                    return progressed or self._received > received, "expired"
                failure = exc
            except (aiohttp.ClientError, ValueError) as exc:
                failure = exc  # before TimeoutError: aiohttp's connect timeout is both
            except TimeoutError:  # the stall took the whole inactivity period
                self._restart("stalled")
                log.warning("watch_stalled", informer=self.name,
                            inactivity=self.timing.inactivity, then="relist")
                return progressed or self._received > received, "stalled"
            if self._received > received:
                progressed, failures = True, 0
            if failure is not None:
                failures += 1
                await self._pause(failure, failures)

    async def _pause(self, exc: Exception, failures: int) -> None:
        delay = self.timing.backoff.delay(failures)
        self._restart(_reason(exc))
        log.warning("watch_failed", informer=self.name, error=str(exc), retry_in=round(delay, 2))
        await asyncio.sleep(delay)

    async def _list(self) -> str:
        body = await request(self.api, "GET", self.path, query=self._selectors,
                             deadline=self.timing.request_timeout)
        if not isinstance(body.get("items") or [], list):
            raise ValueError(f"not a list: {str(body)[:200]}")
        items = body.get("items") or []
        self._store = {_key(o): o for o in items}
        self.synced = True
        self._touch()
        self._on_change(self.objects)
        return str(metadata(body).get("resourceVersion") or "")

    async def _watch_once(self, version: str, timeout_seconds: int) -> str:
        """One watch request; returns the last version seen when it ends cleanly."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timing.request_timeout)
        async with asyncio.timeout(self.timing.inactivity):
            resp = await send(self.api, "GET", self.path, query=self._selectors + query,
                              deadline=timeout)
        async with resp:
            while True:
                async with asyncio.timeout(self.timing.inactivity):
                    line = await resp.content.readline()
                if not line:
                    return version  # the server ended the watch: resume from here
                if line.strip():
                    version = self._apply(json.loads(line), version)

    def _apply(self, event: Obj, version: str) -> str:
        if not isinstance(event, dict) or not isinstance(event.get("object") or {}, dict):
            raise ValueError(f"not a watch event: {str(event)[:200]}")
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise ApiError.from_status(int(obj.get("code") or 500), obj)
        if kind not in WATCH_EVENTS:
            raise ValueError(f"not a watch event: {str(event)[:200]}")
        self._touch()
        self._received += 1
        new_version = str(metadata(obj).get("resourceVersion") or version)
        if kind == "BOOKMARK":
            return new_version
        key = _key(obj)
        if kind == "DELETED":
            self._store.pop(key, None)
        else:
            self._store[key] = obj
        self._on_change(self.objects)
        return new_version

    def _touch(self) -> None:
        self.last_event_at = self._now()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _restart(self, reason: str) -> None:
        self._on_restart(self.name, reason)


def _key(obj: Obj) -> str:
    meta = metadata(obj)
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return "expired" if exc.expired else f"http_{exc.status}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ValueError):
        return "bad_response"
    if isinstance(exc, WatchClosedEarly):
        return "closed_early"
    return "connection"
