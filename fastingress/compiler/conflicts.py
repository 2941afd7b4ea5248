"""Deterministic precedence between Ingresses, and the `ConflictLost` problems it produces.

One rule decides every tie in the compiler (design.md section 3): the oldest Ingress wins, by
creationTimestamp, then order of appearance, then namespace/name. Unknown timestamps sort after
every known one. Must not: depend on dict or set iteration order, or on anything but the keys below.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from fastingress.model.objects import Backend, Ingress, Kind
from fastingress.model.problems import Problem

# sorts after every "YYYY-...Z" timestamp, so Ingresses of unknown age lose to dated ones
_UNKNOWN_CREATED = "~"

PrecedenceKey = tuple[str, int, str, str]


def precedence_key(ingress: Ingress) -> PrecedenceKey:
    """Sort key: smaller is older, and older wins."""
    return (ingress.created or _UNKNOWN_CREATED, ingress.seq, ingress.key.namespace, ingress.key.name)


class PathDraft(msgspec.Struct, frozen=True):
    """One Ingress path after normalisation, before conflicts are resolved and backends resolved."""

    host: str  # the rule host ("" for host-less rules)
    path: str  # normalised Route.path
    match: int  # MATCH_EXACT | MATCH_PREFIX
    ingress: Ingress
    rule_index: int  # i in spec.rules[i]
    path_index: int  # j in spec.rules[i].http.paths[j]
    rule_path: str  # as written
    path_type: str  # as written
    backend: Backend

    @property
    def field(self) -> str:
        """JSON path of this entry inside its Ingress."""
        return f"spec.rules[{self.rule_index}].http.paths[{self.path_index}]"

    def order(self) -> tuple[PrecedenceKey, int, int]:
        """Precedence among drafts: the Ingress first, then position inside it (first written wins)."""
        return (precedence_key(self.ingress), self.rule_index, self.path_index)


def resolve_path_conflicts(drafts: Iterable[PathDraft]) -> tuple[list[PathDraft], list[Problem]]:
    """Keep one draft per (host, path, match): the one with the smallest `order()`.

    Every other draft for the same key gets a `ConflictLost` problem naming the winner.
    """
    winners: dict[tuple[str, str, int], PathDraft] = {}
    losers: list[PathDraft] = []
    for draft in sorted(drafts, key=PathDraft.order):
        slot = (draft.host, draft.path, draft.match)
        if slot in winners:
            losers.append(draft)
        else:
            winners[slot] = draft
    problems = [_conflict_problem(loser, winners[(loser.host, loser.path, loser.match)]) for loser in losers]
    return [winners[k] for k in sorted(winners)], problems


def _conflict_problem(loser: PathDraft, winner: PathDraft) -> Problem:
    where = f"host {loser.host!r}" if loser.host else "every host (no host in the rule)"
    if winner.ingress.key == loser.ingress.key:
        by = f"an earlier entry of the same Ingress ({winner.field})"
    else:
        by = f"the older Ingress {winner.ingress.key}"
    return Problem(
        kind=Kind.INGRESS,
        key=loser.ingress.key,
        field=f"{loser.field}.path",
        reason="ConflictLost",
        message=f"path {loser.rule_path!r} ({loser.path_type}) for {where} is already defined by {by}",
    )
