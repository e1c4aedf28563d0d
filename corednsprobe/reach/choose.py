"""Choosing how the probes reach the pods: the configured strategy, or auto's pick.

Owns: building the Reach that COREDNSPROBE_REACH (or ``--reach``) names, and under
``auto`` assessing the strategies in the RFC's priority order (direct, exposed,
probe-pod, port-forward) and taking the first usable one, with the reason.
Never does: probe on a schedule or judge a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corednsprobe.config import Settings
from corednsprobe.model import IgnoredReply
from corednsprobe.reach import Strategy
from corednsprobe.reach.base import Assessment, NoReach, Reach
from corednsprobe.reach.direct import DirectReach


@dataclass(frozen=True)
class Chosen:
    """The strategy built, why it was taken, and what was found of the others."""

    reach: Reach
    reason: str
    assessments: tuple[Assessment, ...] = field(default=())


async def choose(settings: Settings, api: Any, *, in_cluster: bool,
                 on_ignored: Callable[[IgnoredReply], None] | None = None) -> Chosen:
    """The Reach to probe through; raises NoReach when none can work here."""
    wanted = settings.reach
    if wanted in ("auto", Strategy.DIRECT.value):
        why = ("COREDNSPROBE_REACH=direct" if wanted == Strategy.DIRECT.value
               else "running in the cluster" if in_cluster
               else "auto: the only strategy built")
        return Chosen(DirectReach(settings.timeout, on_ignored=on_ignored), why)
    raise NoReach(f"reach strategy {wanted!r} is not available in this build")
