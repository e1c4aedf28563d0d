"""Kubeconfig files found and merged as kubectl finds and merges them.

Owns: which files are read — ``--kubeconfig`` alone; else every file named by
``$KUBECONFIG`` (an os.pathsep-separated list; empty entries and missing files
skipped, a file named twice read once); else ``~/.kube/config`` — and merging
them by kubectl's rule: the first file to set a value wins (current-context,
and each cluster, user and context by name). Paths inside a file stay relative
to that file. Never does: talk to the API, or write to any kubeconfig (token
refreshes are not persisted).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from kubernetes_asyncio.config.kube_config import ConfigNode

SECTIONS = ("clusters", "contexts", "users")


class KubeconfigError(ValueError):
    """A kubeconfig that exists cannot be read or is not a kubeconfig."""


def candidate_paths(explicit: str | None, environ: Mapping[str, str],
                    home: Path | None = None) -> list[str]:
    """The files to look at, in precedence order (first wins)."""
    if explicit:
        return [explicit]
    env = environ.get("KUBECONFIG", "")
    seen: list[str] = []
    for entry in env.split(os.pathsep):
        path = os.path.expanduser(entry) if entry else ""
        if path and path not in seen:
            seen.append(path)
    if seen:
        return seen
    return [str((home or Path.home()) / ".kube" / "config")]


def existing(paths: Sequence[str]) -> list[str]:
    """The paths that are files (kubectl skips the missing ones of $KUBECONFIG)."""
    return [p for p in paths if Path(p).is_file()]


def merge(paths: Sequence[str]) -> ConfigNode:
    """One kubeconfig from ``paths`` (all existing), the first to set a value winning.

    Each cluster, user and context keeps the file it came from, so the loader
    resolves its relative certificate and token paths against that file.
    """
    merged: dict[str, Any] = {section: [] for section in SECTIONS}
    node: ConfigNode | None = None
    for path in paths:
        document = _read(path)
        if node is None:
            node = ConfigNode(path, merged, path)
        for section in SECTIONS:
            names = {str(item.value.get("name")) for item in merged[section]}
            for item in document.get(section) or []:
                if not isinstance(item, dict) or "name" not in item:
                    raise KubeconfigError(f"{path}: an entry of {section} has no name")
                if str(item["name"]) not in names:
                    names.add(str(item["name"]))
                    merged[section].append(ConfigNode(f"{path}/{section}", item, path))
        for key, value in document.items():
            if key not in SECTIONS and value not in (None, "", {}) and key not in merged:
                merged[key] = value
    if node is None:
        raise KubeconfigError("no kubeconfig file to read")
    return node


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path!r}: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise KubeconfigError(f"{path!r} is not a kubeconfig (not a mapping)")
    return document
