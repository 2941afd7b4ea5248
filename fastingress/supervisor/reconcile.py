"""The control-plane pipeline of the supervisor: source batches -> Store -> compile -> emit -> publish.

Theory of operation (style.md section 10, contour's `handler.go`):

- *Level-triggered.* `apply` feeds a source batch into the `Store`; a batch only marks the pipeline
  dirty when `Store.apply` says some change was relevant, or when the source's problem list changed.
  Compiling always starts from the whole Store snapshot, never from the changes themselves.
- *Debounce.* A publish is due `HOLDOFF_S` after the last relevant change, but never later than
  `MAX_DELAY_S` after the first unpublished one, so a burst becomes one generation and a steady
  trickle still gets out. The clock is injected (`now=`) so tests need no sleeps.
- *Initial sync.* Nothing is published before the source's first emit (its complete initial state);
  that first emit is always published, even when empty, so workers can answer 404s.
- *Publish only what changed.* The routes and endpoints segments are compared byte for byte with the
  last published ones: equal routes means an endpoints-only generation (workers keep their route
  caches), equal both means nothing is published. When only EndpointSlices changed since the last
  compile, the routes part is not even recompiled: `compile_endpoints` reruns against the last
  upstreams (the compiler derives no problems from endpoints).
- *Certificates first.* With a `KeyStore`, the PEM files of every certificate the new table names
  are written before the table is published (a worker never sees a fingerprint without its file),
  and the fingerprints each routes generation names are recorded for the key store's reclamation.
- *Snapshot for readers.* After each publish `state` is replaced, in one assignment, by an immutable
  `ReconcileState`; the admin thread reads only that.
- *Failures.* A publish that raises (a compiler bug, /dev/shm full) is logged with its traceback
  and retried `PUBLISH_RETRY_S` later; the workers keep serving the last generation meanwhile.
- *Problems.* Each problem is logged once at WARNING per (kind, key, reason, message); a problem that
  disappears is forgotten, so it is logged again if it comes back.

Must not: block, sleep, read the environment, or be called from more than one thread (the main loop
owns it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from fastingress.compiler import compile_config, compile_endpoints
from fastingress.compiler.emit import emit_endpoints, emit_routes
from fastingress.compiler.types import CompiledConfig
from fastingress.model.objects import Kind, Snapshot
from fastingress.model.problems import Problem
from fastingress.model.store import Change, Store
from fastingress.settings import Settings
from fastingress.supervisor.keystore import KeyStore
from fastingress.supervisor.offline import compile_options
from fastingress.table.shm import TableWriter

log = logging.getLogger(__name__)

# Debounce: contour uses 100 ms holdoff / 500 ms max delay. Compiling a few thousand Ingresses takes
# tens of ms, so a shorter holdoff keeps a single edit fast (the manifests poll adds 250 ms) while a
# burst (a `kubectl apply -f dir`, a rollout's EndpointSlice churn) still collapses into one generation.
# The defaults of FASTINGRESS_RECONCILE_HOLDOFF_S / _MAX_DELAY_S (settings.py):
HOLDOFF_S = Settings().reconcile_holdoff_s  # quiet time after the last relevant change before publishing
MAX_DELAY_S = Settings().reconcile_max_delay_s  # bound from the first unpublished change: a trickle still publishes
PUBLISH_RETRY_S = 5.0  # after a failed publish; failures are rare (bugs, /dev/shm full), so no backoff

_ProblemId = tuple[str, str, str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcileState:
    """What the admin server reads: the last published config and its generations (immutable)."""

    synced: bool = False  # the source's initial state arrived
    config: CompiledConfig | None = None  # the last compiled config (None before the first publish)
    problems: tuple[Problem, ...] = ()  # source and compiler problems of that compile, sorted
    routes_generation: int = 0
    endpoints_generation: int = 0
    compile_ms: float = 0.0
    published_at: float = 0.0  # monotonic time of the last publish


class Reconciler:
    """Owns the Store, the debounce timer and the last published segments; see the module docstring."""

    def __init__(self, settings: Settings, writer: TableWriter, now: Callable[[], float] = time.monotonic,
                 keys: KeyStore | None = None) -> None:
        self._settings = settings
        self._writer = writer
        self._keys = keys  # None: no certificate files (tests of the pipeline alone)
        self._now = now
        self._store = Store()
        self._synced = False
        self._first_dirty: float | None = None  # first relevant change not yet published
        self._last_dirty = 0.0  # last relevant change
        self._routes_dirty = False  # a relevant change of something other than an EndpointSlice
        self._source_problems: tuple[Problem, ...] = ()
        self._compile_problems: tuple[Problem, ...] = ()
        self._routes_bytes: bytes | None = None
        self._endpoints_bytes: bytes | None = None
        self._logged: set[_ProblemId] = set()
        self._retry_at = 0.0  # after a failed publish, not before this
        self.state = ReconcileState()

    @property
    def synced(self) -> bool:
        return self._synced

    def snapshot(self) -> Snapshot:
        """The Store's current objects (cached by the Store until the next relevant change)."""
        return self._store.snapshot()

    def apply(self, changes: Sequence[Change], problems: Sequence[Problem]) -> None:
        """Take one source batch (the first is the complete initial state)."""
        relevant = False
        for change in changes:
            if self._store.apply(change):
                relevant = True
                if change.kind is not Kind.ENDPOINT_SLICE:
                    self._routes_dirty = True
        new_problems = tuple(problems)
        if new_problems != self._source_problems:
            self._source_problems = new_problems
            relevant = True
        if not self._synced:
            self._synced = True
            self._routes_dirty = relevant = True  # the initial state is published even when empty
        if relevant:
            now = self._now()
            self._last_dirty = now
            if self._first_dirty is None:
                self._first_dirty = now

    def deadline(self) -> float | None:
        """When the pending publish is due (monotonic seconds), or None when nothing is pending."""
        if self._first_dirty is None or not self._synced:
            return None
        settings = self._settings
        return max(min(self._last_dirty + settings.reconcile_holdoff_s,
                       self._first_dirty + settings.reconcile_max_delay_s), self._retry_at)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def publish(self, now: float | None = None) -> bool:
        """Compile and publish what changed; True when a new generation was published.

        A failure (a compiler bug, /dev/shm full) is logged and retried after `PUBLISH_RETRY_S`; the
        workers keep serving the last generation meanwhile.
        """
        if not self._synced:
            return False
        try:
            published = self._publish(self._now() if now is None else now)
        except Exception:
            log.exception("publishing failed; workers keep table generation %d; retrying in %.0f s",
                          self.state.routes_generation, PUBLISH_RETRY_S,
                          extra={"generation": self.state.routes_generation})
            self._retry_at = self._now() + PUBLISH_RETRY_S
            return False
        self._retry_at = 0.0
        return published

    def _publish(self, now: float) -> bool:
        started = time.perf_counter()
        config = self._compile()
        routes = emit_routes(config) if self._routes_dirty or self._routes_bytes is None else self._routes_bytes
        endpoints = emit_endpoints(config.endpoints)
        compile_ms = (time.perf_counter() - started) * 1000.0
        problems = tuple(sorted({*self._source_problems, *self._compile_problems}))
        unchanged = routes == self._routes_bytes and endpoints == self._endpoints_bytes
        if unchanged:
            self.state = dataclasses.replace(self.state, synced=True, config=config, problems=problems)
            log.debug("compiled table unchanged; nothing published", extra={"duration_ms": round(compile_ms, 3)})
        else:
            if self._keys is not None:
                self._keys.write(config.certs)  # before the table that names them
            routes_gen, endpoints_gen = self._writer.publish(None if routes == self._routes_bytes else routes,
                                                             endpoints)
            if self._keys is not None:
                self._keys.published(routes_gen, (c.fingerprint for c in config.certs))
            self._routes_bytes, self._endpoints_bytes = routes, endpoints
            self.state = ReconcileState(synced=True, config=config, problems=problems, routes_generation=routes_gen,
                                        endpoints_generation=endpoints_gen, compile_ms=compile_ms, published_at=now)
            self._log_publish(config, problems, compile_ms)
        self._first_dirty = None
        self._routes_dirty = False
        self._log_problems(problems)
        return not unchanged

    def _compile(self) -> CompiledConfig:
        """The config for the current Store; only the endpoints part when only EndpointSlices changed."""
        snapshot = self._store.snapshot()
        last = self.state.config
        if not self._routes_dirty and last is not None:
            return msgspec.structs.replace(last, endpoints=compile_endpoints(snapshot, last.upstreams))
        config, problems = compile_config(snapshot, compile_options(self._settings))
        self._compile_problems = tuple(problems)
        return config

    def _log_publish(self, config: CompiledConfig, problems: tuple[Problem, ...], compile_ms: float) -> None:
        state = self.state
        routes = sum(len(vh.routes) + (vh.default is not None) for vh in config.vhosts)
        endpoints = sum(len(ue.endpoints) for ue in config.endpoints)
        log.info(
            "published table generation %d.%d: %d hosts, %d routes, %d upstreams, %d endpoints, "
            "%d certificates, %d problems, compiled in %.1f ms",
            state.routes_generation, state.endpoints_generation, len(config.vhosts), routes,
            len(config.upstreams), endpoints, len(config.certs), len(problems), compile_ms,
            extra={"generation": state.routes_generation, "duration_ms": round(compile_ms, 3),
                   "count": len(problems)},
        )

    def _log_problems(self, problems: tuple[Problem, ...]) -> None:
        """WARNING once per distinct problem; forget the ones that went away."""
        current: set[_ProblemId] = set()
        for p in problems:
            pid = (str(p.kind), str(p.key), p.reason, p.message)
            current.add(pid)
            if pid not in self._logged:
                log.warning("%s %s", p.kind, p, extra={"kind": str(p.kind), "namespace": p.key.namespace or None,
                                                       "object": p.key.name, "reason": p.reason,
                                                       "origin": p.origin or None})
        self._logged = current
