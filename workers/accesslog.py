"""The access log: one JSON line per request, written by a thread so the event loop never blocks.

Lines go through a bounded queue; when stdout is slower than the traffic the queue fills and lines
are dropped and counted (Envoy flushes access logs off the worker thread for the same reason).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any

import orjson

QUEUE_LINES = 65536  # about 20 MB of lines at most; a few seconds of a busy worker


class AccessLog:
    def __init__(self, fd: int | None = None, max_lines: int = QUEUE_LINES) -> None:
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.queue: queue.Queue[bytes | None] = queue.Queue(max_lines)
        self.dropped = 0
        self.thread = threading.Thread(target=self._drain, name="access-log", daemon=True)
        self.thread.start()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one line (hot path: one orjson call, never blocks)."""
        try:
            self.queue.put_nowait(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE, default=_bytes))
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        q = self.queue
        while True:
            item = q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 256:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(b"".join(batch))
                    return
                batch.append(nxt)
            self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            self.dropped += 1

    def close(self, timeout_s: float = 2.0) -> None:
        try:
            self.queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self.thread.join(timeout_s)


def _bytes(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError
