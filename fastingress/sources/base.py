"""The `Source` contract: every input behind one tiny interface (Traefik's provider idea).

A source turns some outside world (the Kubernetes API, a manifests directory) into batches of
`Change`s plus the source's *current* list of problems, and hands them to an `emit` callback. The
first call to `emit` is the complete initial state: after it returns, the source counts as synced
and the supervisor may build. Later calls carry only what changed; a source emits nothing when
nothing changed.

What a source must not do: compile, publish, write status, or hold any state the rest of the control
plane reads. `emit` is called from the source's own thread; the receiver only enqueues.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from fastingress.model.problems import Problem
from fastingress.model.store import Change

__all__ = ["Change", "Emit", "Source"]

Emit = Callable[[Sequence[Change], Sequence[Problem]], None]
"""Receives one batch of changes and the full current problems of the source that emitted it."""


class Source(Protocol):
    """An input of the control plane; `run` blocks in its own thread until `stop` is set."""

    name: str  # short, stable, used in logs and metrics, e.g. "manifests" or "kube"

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Emit the complete initial state once, then only changes, until `stop` is set."""
        ...
