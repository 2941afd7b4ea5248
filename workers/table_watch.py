"""Keep the worker on the newest table: check the generation word, map, swap one reference, ack.

Runs on the worker's fast tick. A segment that cannot be used (TableError) leaves the current view
in place; the error is logged once per generation word and counted.
"""

from __future__ import annotations

import logging

from fastingress.errors import TableError
from fastingress.table import stats as st
from fastingress.table.shm import TableReader
from workers.proxy.context import WorkerContext

log = logging.getLogger(__name__)


class TableWatch:
    __slots__ = ("ctx", "failed_word", "reader")

    def __init__(self, reader: TableReader, ctx: WorkerContext) -> None:
        self.reader = reader
        self.ctx = ctx
        self.failed_word = -1

    def poll(self, ack: bool = True) -> bool:
        """Swap to a newer generation if there is one; True when the view changed. `ack` False leaves
        the acknowledgement (which the supervisor reads as "serving it") to the caller."""
        reader = self.reader
        try:
            view = reader.poll()
        except (TableError, OSError, ValueError) as exc:
            word = reader.ctl.current()
            if word != self.failed_word:
                self.failed_word = word
                self.ctx.stats.add(st.TABLE_ERRORS)
                log.error("cannot use table generation: %s", exc, extra={"worker": self.ctx.worker_id,
                                                                         "reason": "TableError"})
            return False
        if view is None:
            return False
        self.ctx.view = view  # the O(1) swap: requests already running keep the view they read
        if ack:
            reader.ack()
        counters = self.ctx.stats.counters
        counters[st.TABLE_ROUTES_GEN], counters[st.TABLE_ENDPOINTS_GEN] = view.generation
        return True
