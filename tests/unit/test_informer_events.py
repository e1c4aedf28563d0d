"""Watch events the informer cannot read fully are taken in stride, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from corednsprobe.kube.informer import Informer


def informer(seen: list[dict[str, Any]]) -> Informer:
    return Informer(None, "/api/v1/pods", name="pods",  # type: ignore[arg-type]
                    on_change=lambda objs: seen.append(dict(objs)))


@pytest.mark.parametrize("meta", [None, [], "x", {"resourceVersion": None}])
def test_an_event_whose_metadata_is_unreadable_keeps_the_last_version(meta: Any) -> None:
    seen: list[dict[str, Any]] = []
    inf = informer(seen)
    inf._touch = lambda: None  # type: ignore[method-assign]  # no loop in a unit test
    version = inf._apply({"type": "MODIFIED", "object": {"metadata": meta}}, "41")
    assert version == "41"
    assert seen, "the object is still handed on, for the view to skip and count"
