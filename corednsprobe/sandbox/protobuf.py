"""Just enough of Kubernetes' protobuf encoding to read what kubectl posts.

kubectl's typed clients (``kubectl auth can-i``) send
``application/vnd.kubernetes.protobuf``: the ``k8s\\0`` magic, a
``runtime.Unknown`` envelope, and the object's generated protobuf message.
Owns: decoding that envelope and a SelfSubjectAccessReview into the JSON
shape the rest of the server reads. Never does: encode (replies are JSON,
which kubectl also accepts) or decode any other kind.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """Bytes that are not a message this module reads."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> dict[int, list[bytes | int]]:
    """Field number → values (bytes for length-delimited, int for varints)."""
    out: dict[int, list[bytes | int]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _message(parent: dict[int, list[bytes | int]], number: int) -> dict[int, list[bytes | int]]:
    value = parent.get(number, [b""])[0]
    return fields(value) if isinstance(value, bytes) else {}


def _text(parent: dict[int, list[bytes | int]], number: int) -> str:
    value = parent.get(number, [b""])[0]
    return value.decode() if isinstance(value, bytes) else ""


def decode_access_review(body: bytes) -> Obj:
    """A protobuf SelfSubjectAccessReview as its JSON form (spec only)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic")
    envelope = fields(body[len(MAGIC):])
    type_meta = _message(envelope, 1)
    if _text(type_meta, 2) != "SelfSubjectAccessReview":
        raise ProtobufError(f"cannot decode {_text(type_meta, 2) or 'this kind'} from protobuf")
    raw = envelope.get(2, [b""])[0]
    spec = _message(fields(raw if isinstance(raw, bytes) else b""), 2)
    out: Obj = {}
    if 1 in spec:
        attrs = _message(spec, 1)
        names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
        out["resourceAttributes"] = {name: _text(attrs, i + 1) for i, name in enumerate(names)
                                     if _text(attrs, i + 1)}
    if 2 in spec:
        attrs = _message(spec, 2)
        out["nonResourceAttributes"] = {"path": _text(attrs, 1), "verb": _text(attrs, 2)}
    return {"apiVersion": _text(type_meta, 1), "kind": "SelfSubjectAccessReview", "spec": out}
