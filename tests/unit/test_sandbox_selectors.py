"""Label and field selectors of the sandbox API server, as the real server parses them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corednsprobe.sandbox.selectors import FieldSelector, LabelSelector, SelectorError

LABELS = {"k8s-app": "kube-dns", "tier": "control", "kubernetes.io/name": "CoreDNS"}


@pytest.mark.parametrize(("text", "expected"), [
    ("", True), ("k8s-app=kube-dns", True), ("k8s-app==kube-dns", True),
    ("k8s-app!=kube-dns", False), ("k8s-app in (a, kube-dns)", True),
    ("k8s-app notin (kube-dns)", False), ("tier", True), ("!tier", False), ("!missing", True),
    ("missing!=x", True), ("k8s-app=kube-dns,tier=control", True),
    ("k8s-app=kube-dns,tier=other", False), ("kubernetes.io/name=CoreDNS", True),
    ("k8s-app in (a,b),tier", False),
])
def test_label_selector(text: str, expected: bool) -> None:
    assert LabelSelector.parse(text).matches(LABELS) is expected


@pytest.mark.parametrize("text", ["k8s-app=a=b", "in (x)", "a b c", "=x"])
def test_bad_label_selectors_are_rejected(text: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(text)


def test_field_selector_paths_are_per_resource() -> None:
    pod = {"metadata": {"name": "p", "namespace": "kube-system"}, "status": {"phase": "Running"}}
    allowed = ("status.phase",)
    assert FieldSelector.parse("metadata.name=p,status.phase=Running", allowed).matches(pod)
    assert not FieldSelector.parse("status.phase!=Running", allowed).matches(pod)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.foo"):
        FieldSelector.parse("spec.foo=x", allowed)


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"])))
def test_equality_and_inequality_are_complements(labels: dict[str, str]) -> None:
    equal = LabelSelector.parse("a=x").matches(labels)
    assert LabelSelector.parse("a!=x").matches(labels) is not equal
    assert LabelSelector.parse("a in (x)").matches(labels) is equal
