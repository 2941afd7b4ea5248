"""Request-level fault injection for the test API server: failures and delays chosen per verb/resource,
by count or for a duration, and the request log the counters are computed from.

Pure bookkeeping, no I/O: the server asks `Faults.take(verb, resource)` once per request, before
doing anything else, and gets back what to do (delay, fail, expire the watch).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Rule:
    """One injected behaviour. `count` None: unlimited; `until` None: forever (monotonic seconds)."""

    action: str  # "fail" | "delay" | "expire"
    verbs: frozenset[str] | None
    resources: frozenset[str] | None
    count: int | None
    until: float | None
    code: int = 500
    delay_s: float = 0.0
    retry_after_s: int | None = None

    def live(self, now: float) -> bool:
        return (self.until is None or now < self.until) and (self.count is None or self.count > 0)

    def applies(self, verb: str, resource: str, now: float) -> bool:
        if not self.live(now):
            return False
        if self.verbs is not None and verb not in self.verbs:
            return False
        return self.resources is None or resource.split("/")[0] in self.resources


@dataclass(slots=True)
class Decision:
    delay_s: float = 0.0
    fail: Rule | None = None
    expire: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server saw it: `verb` is the apiserver verb (list, watch, get, create, update,
    patch, delete), `resource` the canonical name with `/status` for the subresource."""

    verb: str
    resource: str
    namespace: str | None
    name: str | None
    query: dict[str, str]
    content_type: str = ""  # of the request body (PATCH: which patch type the client chose)
    at: float = field(default_factory=time.monotonic)


def _set(values: str | Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    return frozenset([values] if isinstance(values, str) else values)


class Faults:
    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.log: list[Request] = []

    def add(self, action: str, *, count: int | None, for_s: float | None, verbs: str | Iterable[str] | None,
            resources: str | Iterable[str] | None, code: int = 500, delay_s: float = 0.0,
            retry_after_s: int | None = None) -> None:
        until = None if for_s is None else time.monotonic() + for_s
        self.rules.append(Rule(action, _set(verbs), _set(resources), count, until, code, delay_s, retry_after_s))

    def take(self, request: Request) -> Decision:
        """Record the request and consume the rules that apply to it (first fail/expire rule wins; every
        matching delay rule adds up)."""
        self.log.append(request)
        now = time.monotonic()
        decision = Decision()
        for rule in self.rules:
            if not rule.applies(request.verb, request.resource, now):
                continue
            if rule.action == "delay":
                decision.delay_s += rule.delay_s
            elif decision.fail is not None or decision.expire:
                continue
            elif rule.action == "fail":
                decision.fail = rule
            elif rule.action == "expire":
                if request.verb != "watch":
                    continue
                decision.expire = True
            if rule.count is not None:
                rule.count -= 1
        self.rules = [r for r in self.rules if r.live(now)]
        return decision

    def clear(self) -> None:
        self.rules.clear()

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter((r.verb, r.resource) for r in self.log)
