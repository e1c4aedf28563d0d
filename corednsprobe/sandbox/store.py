"""The sandbox's etcd: objects, one global resourceVersion, history and watchers.

Owns: every stored object (as the JSON dict the API serves, kind and
apiVersion included), the revision counter shared by all kinds, a bounded
history of changes (so a watch can resume from an older revision until it is
compacted away), and the delivery of changes to watchers and in-process
listeners (the controllers). Never does: HTTP, authorization or API-level
rules such as preconditions and grace periods (the server and controllers own
those). Stored objects are never mutated in place: every write stores a new
dict, so history and queued events can share them safely.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from corednsprobe.sandbox.resources import Resource
from corednsprobe.sandbox.selectors import FieldSelector, LabelSelector
from corednsprobe.sandbox.status import already_exists, not_found

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_iso() -> str:
    """metav1.Time: RFC 3339 in UTC with whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_CHARS) for _ in range(length))


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


@dataclass(frozen=True, slots=True)
class Change:
    """One write: ``new`` is None for deletions; ``old`` is None for creations."""

    rv: int
    type: str
    resource: Resource
    new: Obj | None
    old: Obj | None

    @property
    def current(self) -> Obj:
        """The object a watcher sees: the new state, or the deleted state at ``rv``."""
        if self.new is not None:
            return self.new
        assert self.old is not None
        return with_rv(self.old, self.rv)


def with_rv(obj: Obj, rv: int) -> Obj:
    out = dict(obj)
    out["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
    return out


class TooOld(Exception):
    """A watch asked for a revision older than the history still holds."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


@dataclass(eq=False)
class Watcher:
    """One open watch: the events it should see, queued in revision order."""

    resource: Resource
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    queue: asyncio.Queue[tuple[str, Obj]] = field(default_factory=asyncio.Queue)

    def selects(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.labels.matches_object(obj) and self.fields.matches(obj)

    def offer(self, change: Change) -> None:
        """Queue what this watcher sees of ``change``, including selector transitions."""
        if change.resource is not self.resource:
            return
        was, now = self.selects(change.old), self.selects(change.new)
        if was and now:
            self.queue.put_nowait((MODIFIED, change.current))
        elif now:
            self.queue.put_nowait((ADDED, change.current))
        elif was:
            # Leaving the selection (or deleted): the old object at the event's revision.
            self.queue.put_nowait((DELETED, with_rv(change.old or {}, change.rv)))


Listener = Callable[[Change], None]


class Store:
    def __init__(self, history_limit: int = 10_000) -> None:
        self.rv = 0
        self.floor = 0  # a watch from a revision below this gets 410
        self.history_limit = history_limit
        self._objects: dict[Resource, dict[Key, Obj]] = {}
        self._history: deque[Change] = deque()
        self._watchers: set[Watcher] = set()
        self._listeners: list[Listener] = []

    # reads ---------------------------------------------------------------

    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        return self._objects.get(res, {}).get((namespace, name))

    def must_get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def items(self, res: Resource, namespace: str | None = None) -> Iterator[Obj]:
        for (ns, _), obj in sorted(self._objects.get(res, {}).items()):
            if namespace is None or ns == namespace:
                yield obj

    def list(self, res: Resource, namespace: str | None, labels: LabelSelector,
             fields: FieldSelector) -> tuple[list[Obj], int]:
        found = [o for o in self.items(res, namespace)
                 if labels.matches_object(o) and fields.matches(o)]
        return found, self.rv

    # writes --------------------------------------------------------------

    def create(self, res: Resource, obj: Obj) -> Obj:
        """Store a new object; fills uid, creationTimestamp, a generated name."""
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._free_name(res, meta.get("namespace", ""), meta["generateName"])
        if self.get(res, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(res, meta["name"])
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["creationTimestamp"] = meta.get("creationTimestamp") or now_iso()
        if res.has_generation:
            meta["generation"] = 1
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        return self._write(res, ADDED, obj, None)

    def replace(self, res: Resource, obj: Obj) -> Obj:
        """Store a new version of an existing object (no checks: callers did them)."""
        old = self.must_get(res, *key_of(obj))
        return self._write(res, MODIFIED, obj, old)

    def remove(self, res: Resource, namespace: str, name: str) -> Obj:
        """Delete now; returns the last state at the deletion's revision."""
        old = self.must_get(res, namespace, name)
        self.rv += 1
        del self._objects[res][(namespace, name)]
        self._publish(Change(self.rv, DELETED, res, None, old))
        return with_rv(old, self.rv)

    def _write(self, res: Resource, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["kind"], stored["apiVersion"] = res.kind, res.api_version
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self._objects.setdefault(res, {})[key_of(stored)] = stored
        self._publish(Change(self.rv, kind, res, stored, old))
        return stored

    def _free_name(self, res: Resource, namespace: str, prefix: str) -> str:
        while True:
            name = prefix + random_suffix()
            if self.get(res, namespace, name) is None:
                return name

    def _publish(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self.history_limit:
            self.floor = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(change)
        for listener in list(self._listeners):
            listener(change)

    # watching ------------------------------------------------------------

    def watch(self, res: Resource, namespace: str | None, labels: LabelSelector,
              fields: FieldSelector, since: int | None) -> Watcher:
        """Open a watch. ``since`` None means "now", with synthetic ADDED events
        for the current state first; otherwise only changes after ``since``.
        Raises ``TooOld`` when history no longer reaches back to ``since``."""
        if since is not None and since < self.floor:
            raise TooOld(since, self.floor)
        watcher = Watcher(res, namespace, labels, fields)
        if since is None:
            for obj in self.items(res, namespace):
                if watcher.selects(obj):
                    watcher.queue.put_nowait((ADDED, obj))
        else:
            for change in self._history:
                if change.rv > since:
                    watcher.offer(change)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def compact(self) -> None:
        """Forget all history: any watch from a revision before now gets 410."""
        self._history.clear()
        self.floor = self.rv

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)
