"""The admin HTTP server: /healthz, /readyz, /metrics and /debug/routes, on its own daemon thread.

Theory of operation: a stdlib `ThreadingHTTPServer` serves a handful of GET endpoints. It never
touches the main loop's mutable state: it reads `reconciler.state` and `arbiter.state`, immutable
snapshots replaced in one assignment by the main loop, the source states (a dict replaced the same
way), and a copy of the workers' stats rows from shared memory (single writer per row; a torn read
shifts a counter by one tick at most).

- `/healthz`: 200 while the process runs; the body names each source's state ("ok" once synced
  and running, "degraded" otherwise). Liveness must not depend on the cluster or the workers.
- `/readyz`: 200 only when the initial sync completed, a generation was published, at least one
  worker serves, and every running worker acknowledged the current routes generation; 503 with a
  JSON reason otherwise (also while draining). Booting workers do not count: they listen on their
  socket only after they mapped the table. Right after a publish, readiness may dip for the few
  ms workers need to acknowledge; probes need several failures in a row, so that is harmless.
- `/metrics`: Prometheus text format 0.0.4 (`metrics.py`); certificate expiry is computed here from
  the current config and the wall clock.
- `/debug/routes`: `describe_config` of the current config: certificates by fingerprint (the default
  certificate's too), never a key (checked again here before sending).
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from fastingress.compiler.describe import describe_config
from fastingress.supervisor.arbiter import Arbiter
from fastingress.supervisor.metrics import CONTENT_TYPE, KubeStats, cert_expiries, render_metrics, sum_rows
from fastingress.supervisor.reconcile import Reconciler
from fastingress.table.stats import StatsBlock

log = logging.getLogger(__name__)

Response = tuple[int, str, bytes]  # status, content type, body
JSON = "application/json"


class AdminView:
    """The read-only view the request handlers answer from."""

    def __init__(self, reconciler: Reconciler, arbiter: Arbiter, stats: StatsBlock,
                 sources: Callable[[], Mapping[str, str]], kube: Callable[[], KubeStats | None] = lambda: None) -> None:
        self.reconciler = reconciler
        self.kube = kube
        self.arbiter = arbiter
        self.stats = stats
        self.sources = sources

    def healthz(self) -> Response:
        sources = dict(self.sources())
        status = "ok" if all(s == "ok" for s in sources.values()) else "degraded"
        return 200, JSON, orjson.dumps({"status": status, "sources": sources})

    def readyz(self) -> Response:
        reason = self.not_ready_reason()
        if reason:
            return 503, JSON, orjson.dumps({"ready": False, "reason": reason})
        return 200, JSON, orjson.dumps({"ready": True, "generation": self.reconciler.state.routes_generation})

    def not_ready_reason(self) -> str:
        rs, arb = self.reconciler.state, self.arbiter.state
        if arb.stopping:
            return "draining"
        if not rs.synced:
            return "initial sync not complete"
        if rs.routes_generation == 0:
            return "no table generation published yet"
        running = [w for w in arb.workers if w.state == "running"]
        if not running:
            return "no worker has loaded the table yet"
        for w in running:
            if w.acked_routes_generation != rs.routes_generation:
                return (f"worker {w.worker_id} serves routes generation {w.acked_routes_generation}, "
                        f"current is {rs.routes_generation}")
        return ""

    def metrics(self) -> Response:
        rs, arb = self.reconciler.state, self.arbiter.state
        totals = sum_rows(self.stats.rows.copy(), arb.retired)
        workers = collections.Counter(w.state for w in arb.workers)
        problems = collections.Counter(p.reason for p in rs.problems)
        certs = rs.config.certs if rs.config is not None else ()
        expiries = cert_expiries(((str(c.secret), c.fingerprint, c.not_after) for c in certs), time.time())
        text = render_metrics(totals, routes_generation=rs.routes_generation,
                              endpoints_generation=rs.endpoints_generation, workers=workers,
                              restarts=arb.restarts, problems=problems, certificates=expiries, kube=self.kube())
        return 200, CONTENT_TYPE, text.encode()

    def debug_routes(self) -> Response:
        rs = self.reconciler.state
        body: dict[str, Any] = {"routes_generation": rs.routes_generation,
                                "endpoints_generation": rs.endpoints_generation,
                                "config": describe_config(rs.config) if rs.config is not None else None}
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2)
        if b"PRIVATE KEY" in data:  # describe_config redacts; never let a regression leak a key
            log.error("/debug/routes would have exposed key material; refused", extra={"reason": "Redaction"})
            return 500, JSON, orjson.dumps({"error": "refused: the description contained key material"})
        return 200, JSON, data

    def route(self, path: str) -> Response:
        handler = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.metrics,
                   "/debug/routes": self.debug_routes}.get(path.split("?", 1)[0])
        if handler is None:
            return 404, JSON, orjson.dumps({"error": "not found"})
        return handler()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # the stdlib names it
        try:
            status, ctype, body = self.server.view.route(self.path)
        except Exception:  # a bug in one endpoint must not kill the admin thread
            log.exception("admin request %s failed", self.path, extra={"path": self.path})
            status, ctype, body = 500, JSON, b'{"error":"internal error"}'
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would flood the log


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: AdminView) -> None:
        self.view = view
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class AdminServer:
    """Binds at construction (so the port is known at once); `start` serves on a daemon thread."""

    def __init__(self, address: str, port: int, view: AdminView) -> None:
        self._server = _Server((address, port), view)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="admin", daemon=True)  # shutdown() waits up to one poll

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
