"""`EventRecorder`: Problems become Kubernetes Events (type Warning) on the objects they name.

Responsibility: decide which problems deserve an Event now (`record`, on the main loop) and post them
(`run`, the sender thread). docs/design/0007-events.md gives the reasons for each rule below.

Theory of operation:
- *What.* A problem about an Ingress, Service, Secret, IngressClass or EndpointSlice becomes one core/v1
  Event on that object. Problems about manifests (Kind.FILE, or any problem with an `origin`) are skipped.
- *Dedupe per generation.* A problem (kind, key, field, reason, message) is offered once per version of
  its object: uid + metadata.generation for an Ingress (our status writes do not count), resourceVersion
  for the rest, "" when the snapshot lacks the object. A problem that disappears is forgotten.
- *Rate limits.* An offer passes a per-object token bucket, a global one and a bounded queue, or it is
  dropped and counted, for that version of the object (retrying would need a timer here).
- *Sending.* Transport errors, 429 and 5xx are retried with backoff under the same Event name (a retry
  after a lost answer gets 409 AlreadyExists: sent, no duplicate), then dropped and counted. One WARNING
  per failure streak, one INFO when posting works again.

Counters (`stats()`): once the queue has drained, each offer is in exactly one of sent, failed,
dropped_rate and dropped_full. `record` writes offered and dropped_*, the sender thread the others.

Must not: do I/O or block in `record`; grow without bound while the API server is down (bounded queue
and bucket map; the dedupe map holds only current problems); decide whether to record at all (only the
elected leader does: the caller's business).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import kubernetes.client
import urllib3

from fastingress.model.objects import EndpointSlice, Kind, ObjectKey, Service, Snapshot, TLSSecret
from fastingress.model.problems import Problem
from fastingress.sources.kubeapi import describe_error

__all__ = ["EventRecorder", "Outgoing", "TokenBucket", "event_message", "truncate_utf8"]

log = logging.getLogger(__name__)

# Per object: client-go's EventSourceObjectSpamFilter defaults (tools/record/events_cache.go,
# defaultSpamBurst = 25, defaultSpamQPS = 1/300): 25 Events about one object at once, then one every
# 5 minutes. Enough for an Ingress with many broken paths; a problem that flaps on every publish goes quiet.
OBJECT_BURST = 25
OBJECT_REFILL_S = 300.0
# Global: a Go controller's Events share its client-side limit (rest.Config QPS 5, burst 10) with all its
# other requests; ours get their own 5/s. 10,000 broken Ingresses then cost the API server 100 writes at
# once and 5/s after that (Events expire after --event-ttl, 1 h by default); a burst of 100 still reports
# a start-up with a realistic number of broken objects in one go.
GLOBAL_BURST = 100
GLOBAL_PER_S = 5.0
QUEUE_SIZE = 1000  # client-go's maxQueuedEvents; about 1.5 KB per queued Event, so ~1.5 MB at most
MAX_IDLE_BUCKETS = 4096  # client-go's maxLruCacheEntries: still-refilling buckets of objects with no problem
# pkg/apis/core/validation/events.go: NoteLengthLimit, ReasonLengthLimit, ReportingInstanceLengthLimit
# (Go lengths, so bytes). Core/v1 only enforces them when eventTime is set; we stay within them anyway.
NOTE_LIMIT_BYTES = 1024
REASON_LIMIT_BYTES = 128
INSTANCE_LIMIT_BYTES = 128
NAME_SUFFIX_LEN = 17  # "." + 16 hex digits of the wall clock in ns, like client-go's makeEvent
NAME_LIMIT = 253  # metadata.name: a DNS subdomain
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0  # one small write; an answer slower than this comes from a sick API server
# 4 attempts over ~10 s ride out an API server restart. client-go tries 12 times 10 s apart, but meanwhile
# its queue is stuck behind that one Event; ours drops sooner and keeps the queue moving.
RETRY_DELAYS_S = (0.5, 2.0, 8.0)
STOP_POLL_S = 0.25  # how long the sender waits on an empty queue before looking at `stop` again
SOURCE_COMPONENT = "fastingress"
REPORTING_COMPONENT = "fastingress.io/ingress-controller"  # a qualified name, as the API requires

_API_VERSIONS = {Kind.INGRESS: "networking.k8s.io/v1", Kind.INGRESS_CLASS: "networking.k8s.io/v1",
                 Kind.SERVICE: "v1", Kind.SECRET: "v1", Kind.ENDPOINT_SLICE: "discovery.k8s.io/v1"}
_ProblemId = tuple[Kind, ObjectKey, str, str, str]  # kind, key, field, reason, message
_ObjectId = tuple[Kind, ObjectKey]


class Outgoing(NamedTuple):
    """One Event waiting for the sender: the namespace to post it in and the core/v1 Event as a dict."""

    namespace: str
    body: dict[str, Any]


class _Ref(NamedTuple):
    """What the snapshot knows about the object a problem names."""

    namespace: str  # "" for cluster-scoped kinds
    version: str  # the dedupe version: "uid/generation" (Ingress), resourceVersion (others), "" if unknown
    uid: str
    resource_version: str


class TokenBucket:
    """`burst` tokens, refilled continuously at `per_s`; the caller takes one per Event."""

    __slots__ = ("at", "burst", "per_s", "tokens")

    def __init__(self, burst: float, per_s: float, now: float) -> None:
        self.burst, self.per_s, self.tokens, self.at = burst, per_s, float(burst), now

    def refill(self, now: float) -> float:
        """The tokens available at `now` (a clock that stepped back refills nothing)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.per_s)
        self.at = max(self.at, now)
        return self.tokens


def truncate_utf8(text: str, limit: int, ellipsis: str = "...") -> str:
    """`text` in at most `limit` UTF-8 bytes, cut on a character boundary and marked with `ellipsis`.

    Lone surrogates (possible in strings decoded from JSON) become "?": they cannot be sent as UTF-8.
    """
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:limit - len(ellipsis.encode())].decode("utf-8", "ignore") + ellipsis


def event_message(problem: Problem) -> str:
    """The Event's message: the problem's sentence, then the field when there is one."""
    text = f"{problem.message} (field {problem.field})" if problem.field else problem.message
    return truncate_utf8(text, NOTE_LIMIT_BYTES)


def _reference(problem: Problem, snapshot: Snapshot) -> _Ref | None:
    """The object a problem names, or None when it has no Kubernetes object to put an Event on."""
    kind, key = problem.kind, problem.key
    if problem.origin or kind not in _API_VERSIONS or not key.name:
        return None
    if kind is Kind.INGRESS:
        ingress = snapshot.ingresses.get(key)
        if ingress is None:
            return _Ref(key.namespace, "", "", "")
        return _Ref(key.namespace, f"{ingress.uid}/{ingress.generation}", ingress.uid, ingress.resource_version)
    if kind is Kind.INGRESS_CLASS:
        found = snapshot.classes.get(key.name)
        return _Ref("", found.resource_version if found else "", "", found.resource_version if found else "")
    obj: Service | TLSSecret | EndpointSlice | None = (
        snapshot.services.get(key) if kind is Kind.SERVICE
        else snapshot.secrets.get(key) if kind is Kind.SECRET else snapshot.slices.get(key))
    rv = obj.resource_version if obj is not None else ""
    return _Ref(key.namespace, rv, "", rv)


class EventRecorder:
    """See the module docstring. `record` belongs to the main loop, `run` to one sender thread."""

    def __init__(self, api_client: kubernetes.client.ApiClient, identity: str, *,
                 component: str = REPORTING_COMPONENT, now: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns, queue_size: int = QUEUE_SIZE,
                 object_burst: int = OBJECT_BURST, object_refill_s: float = OBJECT_REFILL_S,
                 global_burst: int = GLOBAL_BURST, global_per_s: float = GLOBAL_PER_S,
                 request_timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S) -> None:
        self._api_client = api_client
        self._identity = truncate_utf8(identity, INSTANCE_LIMIT_BYTES, "")
        self._component = component
        self._now, self._wall_ns = now, wall_ns
        self._object_burst, self._object_per_s = object_burst, 1.0 / object_refill_s
        self._global = TokenBucket(global_burst, global_per_s, now())
        self._timeout = request_timeout
        self._retry_delays_s = tuple(retry_delays_s)
        # main loop only
        self._seen: dict[_ProblemId, str] = {}  # current problems -> the object version they were offered for
        self._buckets: dict[_ObjectId, TokenBucket] = {}  # insertion order = age, for evicting idle ones
        self._last_name_ns = 0
        self.outbox: queue.Queue[Outgoing] = queue.Queue(queue_size)  # the only thing both threads touch
        # counters: the main loop writes offered and dropped_*, the sender thread the rest
        self.offered = self.dropped_rate = self.dropped_full = 0
        self.sent = self.failed = self.retries = 0
        self._streak = 0  # failed attempts since the last success (sender thread)

    def stats(self) -> dict[str, int]:
        """Counters for /metrics (any thread; each value is read atomically)."""
        return {"offered": self.offered, "sent": self.sent, "dropped_rate": self.dropped_rate,
                "dropped_full": self.dropped_full, "failed": self.failed, "retries": self.retries,
                "queued": self.outbox.qsize(), "tracked": len(self._seen)}

    # --- main loop ------------------------------------------------------------------------------------
    def record(self, problems: Sequence[Problem], snapshot: Snapshot) -> None:
        """Offer what is new since the last call: new problems and problems of objects with a new version."""
        now = self._now()
        seen: dict[_ProblemId, str] = {}
        objects: set[_ObjectId] = set()
        for problem in problems:
            ref = _reference(problem, snapshot)
            if ref is None:
                continue
            pid = (problem.kind, problem.key, problem.field, problem.reason, problem.message)
            seen[pid] = ref.version
            objects.add((problem.kind, problem.key))
            if self._seen.get(pid) != ref.version:
                self._offer(problem, ref, now)
        self._seen = seen  # problems that went away are forgotten here
        self._prune_buckets(now, objects)

    def reset(self) -> None:
        """Forget what was offered (e.g. on becoming leader again: problems may have come and gone)."""
        self._seen = {}

    def _offer(self, problem: Problem, ref: _Ref, now: float) -> None:
        self.offered += 1
        bucket = self._buckets.get((problem.kind, problem.key))
        if bucket is None:
            bucket = self._buckets[(problem.kind, problem.key)] = TokenBucket(self._object_burst,
                                                                              self._object_per_s, now)
        if bucket.refill(now) < 1.0 or self._global.refill(now) < 1.0:
            self.dropped_rate += 1
            return
        try:
            self.outbox.put_nowait(self._build(problem, ref))
        except queue.Full:
            self.dropped_full += 1  # the tokens stay: nothing was sent
            return
        bucket.tokens -= 1.0
        self._global.tokens -= 1.0

    def _prune_buckets(self, now: float, current: set[_ObjectId]) -> None:
        """Forget the buckets of objects with no problem once they are full again (a new bucket would be
        the same), and the oldest still-refilling ones beyond MAX_IDLE_BUCKETS."""
        idle = [obj for obj in self._buckets if obj not in current]
        for obj in idle:
            if self._buckets[obj].refill(now) >= self._object_burst:
                del self._buckets[obj]
        refilling = [obj for obj in idle if obj in self._buckets]  # oldest first
        for obj in refilling[:max(0, len(refilling) - MAX_IDLE_BUCKETS)]:
            del self._buckets[obj]

    def _build(self, problem: Problem, ref: _Ref) -> Outgoing:
        # client-go names Events "<object>.<UnixNano in hex>"; +1 keeps names unique within one clock tick
        stamp_ns = self._last_name_ns = max(self._wall_ns(), self._last_name_ns + 1)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp_ns // 1_000_000_000))
        prefix = problem.key.name[:NAME_LIMIT - NAME_SUFFIX_LEN].rstrip(".-")
        involved = {"apiVersion": _API_VERSIONS[problem.kind], "kind": str(problem.kind), "name": problem.key.name}
        if ref.namespace:
            involved["namespace"] = ref.namespace
        if ref.uid:
            involved["uid"] = ref.uid
        if ref.resource_version:
            involved["resourceVersion"] = ref.resource_version
        namespace = ref.namespace or "default"  # cluster-scoped objects: as client-go's makeEvent
        # No eventTime: the client re-serialises it with datetime.isoformat(), which drops ".000000" when
        # the microseconds are 0, and the API server parses eventTime only with exactly six digits.
        return Outgoing(namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{prefix}.{stamp_ns:016x}", "namespace": namespace},
            "involvedObject": involved, "type": "Warning",
            "reason": truncate_utf8(problem.reason, REASON_LIMIT_BYTES, ""), "message": event_message(problem),
            "source": {"component": SOURCE_COMPONENT, "host": self._identity},
            "reportingComponent": self._component, "reportingInstance": self._identity,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })

    # --- sender thread --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Post queued Events until `stop` is set; what is still queued then is abandoned."""
        api = kubernetes.client.CoreV1Api(self._api_client)
        while not stop.is_set():
            try:
                item = self.outbox.get(timeout=STOP_POLL_S)
            except queue.Empty:
                continue
            try:
                self._send(api, item, stop)
            except Exception:  # a bug must not end the thread: the next Event may be fine
                self.failed += 1
                log.exception("sending Event %s/%s failed unexpectedly", item.namespace, item.body["metadata"]["name"])

    def _send(self, api: kubernetes.client.CoreV1Api, item: Outgoing, stop: threading.Event) -> None:
        event = kubernetes.client.CoreV1Event.from_dict(item.body)  # here, not in `record`: ~1 ms of pydantic
        assert event is not None  # from_dict returns None only for None
        for delay in (*self._retry_delays_s, None):
            try:
                api.create_namespaced_event(item.namespace, event, _request_timeout=self._timeout)
            except Exception as exc:
                # 409 on a create is AlreadyExists: an earlier attempt landed though its answer was lost
                if not (isinstance(exc, kubernetes.client.ApiException) and exc.status == 409):
                    self._failed_attempt(item, exc)
                    if delay is None or not _retryable(exc) or stop.wait(delay):
                        self.failed += 1
                        return
                    self.retries += 1
                    continue
            self.sent += 1
            if self._streak:
                log.info("posting Events works again after %d failed attempts", self._streak)
                self._streak = 0
            return

    def _failed_attempt(self, item: Outgoing, exc: Exception) -> None:
        """Log the first failure of a streak only: an API server outage must not flood the log."""
        self._streak += 1
        if self._streak == 1:
            involved = item.body["involvedObject"]
            why = f"{describe_error(exc)}: {exc}"  # once per streak: the detail is worth its length
            extra = {"kind": involved["kind"], "namespace": involved.get("namespace"), "object": involved["name"],
                     "reason": item.body["reason"]}
            log.warning("posting an Event failed (%s); Events are retried %d times on server and connection "
                        "errors, then dropped; no further warnings until a post succeeds", why,
                        len(self._retry_delays_s), extra=extra)


def _retryable(exc: Exception) -> bool:
    """Transport errors, throttling and server errors; a 4xx is about the Event itself and would repeat."""
    if isinstance(exc, kubernetes.client.ApiException):
        return not exc.status or exc.status == 429 or exc.status >= 500  # status 0: the client's own I/O error
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))
