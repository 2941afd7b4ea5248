"""`LeaseElector`: leader election on a `coordination.k8s.io/v1` Lease, so one replica writes Ingress status.

Responsibility: decide, from one daemon thread (`run(stop)`), whether this replica holds the Lease,
and expose that as `is_leader` and `on_change` callbacks. It must not do the leader's work, and it must
never let an exception out of `run()`. Why our own and not `kubernetes.leaderelection`: that one uses
the global default client configuration, calls `sys.exit()` on bad durations, has no stop and cannot
release the Lease (docs/design/0006-status-and-leader-election.md).

Theory of operation (client-go's `leaderelection.go` semantics):

- *One attempt per period.* The leader renews every `retry_period_s` with a PUT carrying the
  resourceVersion of its last write (the compare-and-swap); a 409 means someone else wrote, so it
  re-reads. A follower GETs the Lease every `retry_period_s` plus up to 20 % jitter (404: create it;
  409 AlreadyExists on create: another replica won the race).
- *Expiry on our own clock.* A follower takes over only when the record it observed (holder, times,
  duration, transitions) has not changed for the holder's `leaseDurationSeconds`, measured on this
  process's monotonic clock from the moment it saw the record change, never from the remote
  `renewTime` (the clocks of two nodes may disagree). It then PUTs with the observed resourceVersion:
  of several followers racing, one wins and the others get 409. A follower also wakes exactly when the
  observed record would expire, so a crashed leader is replaced within the lease duration plus one
  period of when it last renewed.
- *Every write changes the record.* `renewTime` is "now" on each write: a no-op write keeps the
  resourceVersion, so two identical renewals would both pass the compare-and-swap. A change of holder
  increments `leaseTransitions` and sets `acquireTime`.
- *Stepping down.* The leader is valid for `renew_deadline_s` after it *sent* its last successful write
  (the server applied it later, and followers count from when they saw it, so the leader's view ends
  first). `is_leader` turns False at that deadline by itself, even while the loop is blocked in a
  request; the loop then reports the loss. The Lease API has whole seconds only, so the advertised
  duration is `lease_duration_s` rounded up.
- *Release.* On `stop`, a leader (with `release_on_stop`) writes the Lease with no holder and a 1 s
  duration, as client-go's `ReleaseOnCancel` does, so a follower takes over at its next attempt.
  Without release (a crash), followers wait out the lease duration.
- *Timeouts.* Every call has `_request_timeout=(t, t)`, t = renew_deadline / 4: a renewal that needs a
  GET and a PUT cannot outlast the deadline (our production client disables urllib3's own retries; with
  them it could take 4x longer, but `is_leader` does not depend on the loop).
- *Errors.* ApiExceptions and urllib3 errors are caught, logged once per distinct reason per streak of
  failures (no log storm when the API server is down), and the attempt is retried next period.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from fastingress.sources.kubeapi import describe_error

__all__ = ["JITTER", "LeaseElector", "describe_error", "micro_time"]

log = logging.getLogger(__name__)

JITTER = 0.2  # followers wait retry_period * (1 + up to 20 %); client-go's 1.2 is a lot for a 2 s period

Record = tuple[str, int, Any, Any, int]  # holder, duration, acquireTime, renewTime, transitions


def micro_time(now: dt.datetime) -> dt.datetime:
    """`now` in UTC, never on a whole second, for a metav1.MicroTime field.

    The API server parses MicroTime with Go's RFC3339Micro layout ("2006-01-02T15:04:05.000000Z07:00":
    six mandatory fraction digits, "Z" or an offset) and writes it as "%Y-%m-%dT%H:%M:%S.%fZ". The client
    validates our body into pydantic models and sends datetimes as `isoformat()`, which writes "+00:00"
    (accepted) but drops the fraction when it is 0: a write landing on an exact second would get a 400."""
    now = now.astimezone(dt.UTC)
    return now.replace(microsecond=1) if now.microsecond == 0 else now


def _record(lease: Any) -> Record:
    spec = lease.spec or kubernetes.client.V1LeaseSpec()
    return (spec.holder_identity or "", spec.lease_duration_seconds or 0, spec.acquire_time, spec.renew_time,
            spec.lease_transitions or 0)


class LeaseElector:
    """Leader election on Lease `namespace/name` as `identity`; run it with `run(stop)` in a daemon thread."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, namespace: str, name: str, identity: str,
                 lease_duration_s: float, renew_deadline_s: float, retry_period_s: float,
                 release_on_stop: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < retry_period_s < renew_deadline_s < lease_duration_s:
            raise ValueError("0 < retry_period_s < renew_deadline_s < lease_duration_s must hold")
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s, self.renew_deadline_s, self.retry_period_s = (
            lease_duration_s, renew_deadline_s, retry_period_s)
        self.release_on_stop = release_on_stop  # False: stop like a crash (tests), the Lease runs out
        self._clock = clock
        self._timeout = (renew_deadline_s / 4, renew_deadline_s / 4)
        self._wire_duration = max(1, math.ceil(lease_duration_s))
        self._lock = threading.Lock()  # guards _leader and _renewed_at together (is_leader reads both)
        self._leader = False
        self._renewed_at = -math.inf  # clock() when the last successful write was sent
        self._callbacks: list[Callable[[bool], None]] = []
        # the loop thread's own state
        self._lease: Any = None  # the last V1Lease seen (its resourceVersion is the next write's precondition)
        self._observed: Record | None = None
        self._observed_at = -math.inf  # clock() when _observed last changed
        self._errors: set[str] = set()  # reasons logged in the current streak of failures
        self._failures = 0
        self._random = random.Random()

    # --- the other threads' side -------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the Lease now: False as soon as the renew deadline has passed."""
        with self._lock:
            return self._leader and self._clock() - self._renewed_at < self.renew_deadline_s

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(is_leader)` on every transition, from the elector thread; it must only signal."""
        self._callbacks.append(callback)

    @property
    def holder(self) -> str:
        """The holder in the last observed record ("" when none or unknown)."""
        observed = self._observed
        return observed[0] if observed is not None else ""

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Elect until `stop` is set, then release the Lease if held (and `release_on_stop`)."""
        try:
            while not stop.is_set():
                started = self._clock()
                self._step(started)
                stop.wait(max(0.0, started + self._period(started) - self._clock()))
        finally:
            self._finish()

    def _period(self, now: float) -> float:
        if self._leader:
            return self.retry_period_s
        period = self.retry_period_s * (1 + JITTER * self._random.random())
        if self.holder and self.holder != self.identity:
            period = min(period, max(self._expires_at() - now, 0.0) + 0.001)  # wake when the lease runs out
        return period

    def _expires_at(self) -> float:
        """When the observed record runs out on our clock: its holder's advertised duration after we saw it."""
        duration = self._observed[1] if self._observed is not None else 0
        return self._observed_at + (duration or self.lease_duration_s)

    def _step(self, now: float) -> None:
        self._check_deadline(now)  # a leader that renews only after its deadline reports the loss, then wins anew
        try:
            held = self._try_acquire_or_renew()
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            self._failed(describe_error(exc), None)
            held = False
        except Exception as exc:  # a bug or a malformed answer: must not end the thread
            self._failed(f"unexpected {type(exc).__name__}: {exc}", exc)
            held = False
        else:
            if self._failures:
                log.info("Lease %s/%s reachable again after %d failed attempts", self.namespace, self.name,
                         self._failures, extra={"kind": "Lease", "namespace": self.namespace, "object": self.name})
            self._errors.clear()
            self._failures = 0
        if held:
            self._set_leader(True, now, "")
        elif self._leader and self.holder != self.identity:
            self._set_leader(False, now, f"the Lease is held by {self.holder or 'nobody'}")
        else:
            self._check_deadline(self._clock())

    def _check_deadline(self, now: float) -> None:
        if self._leader and now - self._renewed_at >= self.renew_deadline_s:
            self._set_leader(False, now, f"not renewed for {self.renew_deadline_s:g} s (renew deadline)")

    def _failed(self, reason: str, exc: Exception | None) -> None:
        self._failures += 1
        if reason not in self._errors:
            self._errors.add(reason)
            log.warning("Lease %s/%s: %s; retrying every %g s", self.namespace, self.name, reason,
                        self.retry_period_s, exc_info=exc,
                        extra={"kind": "Lease", "namespace": self.namespace, "object": self.name, "reason": reason})

    def _try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards. Raises on API failures."""
        if self._leader and self._lease is not None:
            try:  # fast path (client-go too): renew on the resourceVersion of our last write, no GET
                return self._write(self._lease)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create()
        self._observe(lease)
        if self.holder and self.holder != self.identity and self._clock() < self._expires_at():
            return False
        try:
            return self._write(lease)
        except ApiException as exc:
            if exc.status == 409:
                return False  # another replica wrote first; the next GET tells who
            raise

    def _observe(self, lease: Any) -> None:
        self._lease = lease
        record = _record(lease)
        if record != self._observed:
            if record[0] != self.identity and (self._observed is None or record[0] != self._observed[0]):
                log.info("Lease %s/%s is held by %s", self.namespace, self.name, record[0] or "nobody",
                         extra={"kind": "Lease", "namespace": self.namespace, "object": self.name})
            # after the answer, not when the request was sent: the record may have been written meanwhile
            self._observed, self._observed_at = record, self._clock()

    def _create(self) -> bool:
        wall = micro_time(dt.datetime.now(dt.UTC))
        body = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=kubernetes.client.V1LeaseSpec(holder_identity=self.identity, acquire_time=wall, renew_time=wall,
                                               lease_duration_seconds=self._wire_duration, lease_transitions=0))
        try:
            created = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:
                return False  # AlreadyExists: another replica created it first
            raise
        self._observe(created)
        return True

    def _write(self, lease: Any, *, release: bool = False) -> bool:
        """PUT `lease` (its resourceVersion the precondition) renewed by us, or released; 409 raises."""
        holder, _, acquired, _, transitions = _record(lease)
        wall = micro_time(dt.datetime.now(dt.UTC))
        spec = kubernetes.client.V1LeaseSpec(
            holder_identity=None if release else self.identity,
            lease_duration_seconds=1 if release else self._wire_duration,
            acquire_time=wall if release or holder != self.identity else acquired,
            renew_time=wall,
            lease_transitions=transitions + 1 if holder != self.identity and not release else transitions)
        body = kubernetes.client.V1Lease(metadata=lease.metadata, spec=spec)
        written = self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout)
        self._observe(written)
        return not release

    def _set_leader(self, leader: bool, now: float, reason: str) -> None:
        with self._lock:
            changed, self._leader = leader != self._leader, leader
            if leader:
                self._renewed_at = now
        if not changed:
            return
        extra = {"kind": "Lease", "namespace": self.namespace, "object": self.name}
        if leader:
            log.info("became leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity, extra=extra)
        else:
            log.info("lost leadership: %s", reason, extra={**extra, "reason": reason})
        for callback in self._callbacks:
            try:
                callback(leader)
            except Exception:
                log.exception("leadership callback failed")

    def _finish(self) -> None:
        """On stop: step down first (nobody may act on a Lease we are giving up), then release it."""
        was_leader = self._leader and self._lease is not None and self.is_leader
        if not self.release_on_stop or not was_leader:
            self._set_leader(False, self._clock(), "stopping")
            return
        self._set_leader(False, self._clock(), "stopping (releasing the Lease)")
        try:
            self._write(self._lease, release=True)
        except Exception as exc:  # the Lease then simply runs out
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, describe_error(exc),
                        extra={"kind": "Lease", "namespace": self.namespace, "object": self.name})
