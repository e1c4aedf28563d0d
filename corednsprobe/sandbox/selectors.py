"""Label and field selectors, parsed the way the Kubernetes API server reads them.

Owns: the grammar (``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``,
``k``, ``!k``; comma means AND) and matching an object against a selector.
Never does: I/O. A selector that cannot be parsed raises ``SelectorError``
carrying the message the API server would put in its 400 Status.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]


class SelectorError(ValueError):
    """A selector the server rejects with 400 BadRequest."""


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_TERM = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_EQ_TERM = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_TERM = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


def _parse_requirement(term: str) -> Requirement:
    if m := _SET_TERM.match(term):
        values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
        return Requirement(m["key"], m["op"], values)
    if m := _EQ_TERM.match(term):
        op = "=" if m["op"] == "==" else m["op"]
        return Requirement(m["key"], op, frozenset({m["value"]}))
    if m := _EXISTS_TERM.match(term):
        return Requirement(m["key"], "!exists" if m["neg"] else "exists")
    raise SelectorError(f"unable to parse requirement: found '{term.strip()}', "
                        "expected: in, notin, =, ==, !=, gt, lt")


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text:
            return cls()
        return cls(tuple(_parse_requirement(t) for t in _split_terms(text)))

    @classmethod
    def from_match_labels(cls, selector: Obj | None) -> LabelSelector | None:
        """A ``spec.selector`` (matchLabels/matchExpressions); None selects nothing."""
        if not selector:
            return None
        reqs = [Requirement(k, "=", frozenset({v}))
                for k, v in (selector.get("matchLabels") or {}).items()]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
        for expr in selector.get("matchExpressions") or []:
            reqs.append(Requirement(expr["key"], ops[expr["operator"]],
                                    frozenset(expr.get("values") or ())))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)

    def matches_object(self, obj: Obj) -> bool:
        return self.matches(obj.get("metadata", {}).get("labels"))


def field_value(obj: Obj, path: str) -> str:
    """The string a field selector compares against ("" when absent)."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, dict):  # "source" on events is a struct: match its component
        return str(node.get("component", ""))
    return str(node)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, str, str], ...] = ()  # (path, op, value)

    @classmethod
    def parse(cls, text: str | None, allowed: tuple[str, ...]) -> FieldSelector:
        """Parse against the paths this resource supports; others raise SelectorError."""
        if not text:
            return cls()
        terms = []
        for term in _split_terms(text):
            m = re.match(r"^\s*([^=!\s]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
            if not m:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
            path, op, value = m.groups()
            if path not in ("metadata.name", "metadata.namespace", *allowed):
                raise SelectorError(f"field label not supported: {path}")
            terms.append((path, "!=" if op == "!=" else "=", value))
        return cls(tuple(terms))

    def matches(self, obj: Obj) -> bool:
        for path, op, value in self.terms:
            if (field_value(obj, path) == value) != (op == "="):
                return False
        return True
