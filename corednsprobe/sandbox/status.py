"""``Status`` bodies, worded exactly as the Kubernetes API server words them.

Owns: every error (and the few success) bodies the sandbox returns, and
``ApiError``, the exception that carries one to the HTTP edge. Never does: I/O.
Key order follows the real server (kind, apiVersion, metadata, status, message,
reason, details, code); the HTTP status equals ``code``.
"""

from __future__ import annotations

from typing import Any

from corednsprobe.sandbox.resources import Resource

Obj = dict[str, Any]


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def success(code: int) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": code}


class ApiError(Exception):
    """An API failure on its way to the client as a Status body."""

    def __init__(self, body: Obj) -> None:
        super().__init__(body["message"])
        self.body = body

    @property
    def code(self) -> int:
        return int(self.body["code"])

    @property
    def retry_after(self) -> int:
        return int((self.body.get("details") or {}).get("retryAfterSeconds") or 0)


def _details(res: Resource | None, name: str, kind: str | None = None) -> Obj:
    details: Obj = {}
    if name:
        details["name"] = name
    if res is not None and res.group:
        details["group"] = res.group
    details["kind"] = kind if kind is not None else (res.plural if res else "")
    return details


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(status_body(404, "NotFound", f'{res.qualified} "{name}" not found',
                                _details(res, name)))


def path_not_found() -> ApiError:
    return ApiError(status_body(404, "NotFound", "the server could not find the requested resource",
                                {}))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(status_body(409, "AlreadyExists", f'{res.qualified} "{name}" already exists',
                                _details(res, name)))


def conflict_modified(res: Resource, name: str) -> ApiError:
    message = (f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
               "modified; please apply your changes to the latest version and try again")
    return ApiError(status_body(409, "Conflict", message, _details(res, name)))


def conflict_precondition(res: Resource, namespace: str, name: str, what: str,
                          wanted: str, actual: str) -> ApiError:
    """``what`` is ``UID`` or ``ResourceVersion``."""
    key = f"/registry/{res.qualified}/{namespace}/{name}" if namespace else \
        f"/registry/{res.qualified}/{name}"
    message = (f'Operation cannot be fulfilled on {res.qualified} "{name}": StorageError: '
               f"invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: "
               f"Precondition failed: {what} in precondition: {wanted}, {what} in object meta: "
               f"{actual}")
    return ApiError(status_body(409, "Conflict", message, _details(res, name)))


def invalid(res: Resource, name: str, field: str, detail: str,
            reason: str = "FieldValueInvalid") -> ApiError:
    """422 with one cause (e.g. a Lease PUT without resourceVersion)."""
    group = f".{res.group}" if res.group else ""
    message = f'{res.kind}{group} "{name}" is invalid: {field}: {detail}'
    details = _details(res, name, kind=res.kind)
    details["causes"] = [{"reason": reason, "message": detail, "field": field}]
    return ApiError(status_body(422, "Invalid", message, details))


def required(res: Resource, field: str, detail: str) -> ApiError:
    group = f".{res.group}" if res.group else ""
    details = _details(res, "", kind=res.kind)
    details["causes"] = [{"reason": "FieldValueRequired", "message": f"Required value: {detail}",
                          "field": field}]
    return ApiError(status_body(422, "Invalid",
                                f'{res.kind}{group} "" is invalid: {field}: Required value: '
                                f"{detail}", details))


def bad_request(message: str) -> ApiError:
    return ApiError(status_body(400, "BadRequest", message))


def method_not_allowed(verb: str) -> ApiError:
    return ApiError(status_body(405, "MethodNotAllowed",
                                f"the server does not allow this method on the requested "
                                f"resource ({verb})", {}))


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(status_body(415, "UnsupportedMediaType",
                                f"the body of the request was in an unknown format - accepted "
                                f"media types include: application/json-patch+json, application/"
                                f"merge-patch+json, application/strategic-merge-patch+json "
                                f"(got {content_type})"))


def unauthorized() -> ApiError:
    return ApiError(status_body(401, "Unauthorized", "Unauthorized"))


def forbidden(res_label: str, name: str, group: str, reason: str) -> ApiError:
    """``res_label`` is the plural as the message and details name it (``pods``)."""
    qualified = f"{res_label}.{group}" if group else res_label
    subject = f'{qualified} "{name}"' if name else qualified
    details: Obj = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = res_label
    return ApiError(status_body(403, "Forbidden", f"{subject} is forbidden: {reason}", details))


def expired(requested: int, oldest: int) -> Obj:
    return status_body(410, "Expired", f"too old resource version: {requested} ({oldest})")


def gone(requested: int, oldest: int) -> Obj:
    return status_body(410, "Gone", f"too old resource version: {requested} ({oldest})")


def expired_at_connect() -> Obj:
    return status_body(410, "Expired", "The resourceVersion for the provided watch is too old.")


def pdb_blocked(pdb_name: str, desired: int, current: int) -> ApiError:
    cause = (f"The disruption budget {pdb_name} needs {desired} healthy pods and has "
             f"{current} currently")
    return ApiError(status_body(429, "TooManyRequests",
                                "Cannot evict pod as it would violate the pod's disruption "
                                "budget.",
                                {"causes": [{"reason": "DisruptionBudget", "message": cause}]}))


def pdb_processing(pdb_name: str) -> ApiError:
    cause = f"The disruption budget {pdb_name} is still being processed by the server."
    return ApiError(status_body(429, "TooManyRequests",
                                "Cannot evict pod as it would violate the pod's disruption "
                                "budget.",
                                {"causes": [{"reason": "DisruptionBudget", "message": cause}],
                                 "retryAfterSeconds": 10}))


def internal_error(message: str, code: int = 500) -> ApiError:
    if code == 503:
        return ApiError(status_body(503, "ServiceUnavailable", message, {}))
    return ApiError(status_body(code, "InternalError", f"Internal error occurred: {message}",
                                {"causes": [{"message": message}]}))


def not_acceptable() -> ApiError:
    """406, as asTable in apiserver/pkg/endpoints/handlers/response.go answers an
    unknown Table group/version."""
    return ApiError(status_body(406, "NotAcceptable",
                                "only the following media types are accepted: application/json, "
                                "application/yaml, application/vnd.kubernetes.protobuf", {}))
