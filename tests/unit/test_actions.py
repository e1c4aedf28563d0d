"""How the API's error answers read as remediation outcomes (Status bodies as the API
server writes them; see the kube-api reference)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from corednsprobe.kube.client import ApiError
from corednsprobe.remedy.actions import Involved, outcome_of
from corednsprobe.remedy.history import Result

PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


def answer(code: int, body: dict[str, Any], headers: dict[str, str] | None = None
           ) -> ApiError:
    """The generated client's exception, as the one client edge hands it on."""
    exc = ApiException(status=code, reason="phrase")
    exc.body = json.dumps({"kind": "Status", "code": code, **body}).encode()
    exc.headers = headers or {}
    return ApiError.from_exception(exc)


def test_pdb_429_with_its_causes_and_no_retry_after() -> None:
    out = outcome_of(answer(429, {"message": PDB_MESSAGE, "reason": "TooManyRequests",
                                  "details": {"causes": [{"reason": "DisruptionBudget",
                                                          "message": "needs 2 healthy"}]}}))
    assert (out.result, out.status, out.retry_after) == (Result.PDB_BLOCKED, 429, None)
    assert out.causes == ("needs 2 healthy",) and out.message == PDB_MESSAGE


def test_retry_after_from_the_header_or_the_details() -> None:
    header = outcome_of(answer(429, {"details": {}}, {"Retry-After": "10"}))
    details = outcome_of(answer(429, {"details": {"retryAfterSeconds": 7}}))
    assert (header.retry_after, details.retry_after) == (10.0, 7.0)


@pytest.mark.parametrize(("code", "message", "result"), [
    (404, 'pods "coredns-abc" not found', Result.GONE),
    (409, "Operation cannot be fulfilled on pods \"coredns-abc\": StorageError: invalid object, "
          "Code: 4, AdditionalErrorMsg: Precondition failed: UID in precondition: u-1, "
          "UID in object meta: u-2", Result.GONE),
    (409, "Operation cannot be fulfilled on poddisruptionbudgets.policy \"coredns\": the object "
          "has been modified", Result.FAILED),
    (403, 'pods "coredns-abc" is forbidden: User "x" cannot create resource "pods/eviction"',
     Result.FORBIDDEN),
    (500, "etcdserver: request timed out", Result.FAILED),
])
def test_error_answers(code: int, message: str, result: Result) -> None:
    out = outcome_of(answer(code, {"message": message}))
    assert (out.result, out.status, out.message) == (result, code, message)


def test_a_body_that_is_not_json_still_reads() -> None:
    exc = ApiException(status=502, reason="Bad Gateway")
    exc.body = b"<html>bad gateway</html>"
    out = outcome_of(ApiError.from_exception(exc))
    assert (out.result, out.message) == (Result.FAILED, "Bad Gateway")


def test_events_name_the_deployment_not_a_guess() -> None:
    assert Involved.workload("Deployment/coredns", "kube-system") == Involved(
        "Deployment", "coredns", "kube-system", api_version="apps/v1")
    assert Involved.workload("Pod/coredns", "kube-system") is None
