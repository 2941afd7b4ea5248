"""Shared memory: the supervisor's TableWriter and the workers' TableReader (design.md section 2).

Theory of operation:
- The *control block* `/dev/shm/<prefix>-ctl` (created by the writer, fixed size) holds the magic,
  the current generations packed in one aligned 64-bit word (routes generation << 32 | endpoints
  generation) and one slot per reader: pid, acknowledged word, heartbeat (CLOCK_MONOTONIC ns).
- A publish writes one immutable file completely under a temporary name, renames it into place, and
  only then stores the new word. A full publish writes `<prefix>-r<gen>`: the routes segment followed
  by its endpoints segment (one file: one open/mmap per swap, which costs ~20 us on a VM); an
  endpoints-only publish writes `<prefix>-e<gen>` and keeps the routes file (and every worker-side
  route cache on it). A reader that sees the word maps the file, checks headers and trailers and
  swaps one reference: O(1) in the table's size, no lock; numpy views are built on first use.
- Reclamation (RCU-style): a segment is unlinked once every live reader has acknowledged a later
  generation. A reader still holding a view keeps its mapping; unlinking only drops the name.
- Slots of dead readers are freed by `reap_dead_readers()`; `close()` unlinks everything; a new
  writer removes segments left behind by writers whose pid is gone (e.g. after a SIGKILL).

Must not: use multiprocessing.shared_memory (its resource tracker may unlink segments it did not
create on Python 3.11, CPython gh-82300), take locks, or decode tables on the reader's swap path.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import time

import numpy as np

from fastingress.errors import TableError
from fastingress.table import schema as s
from fastingress.table.lookup import EndpointTable, RouteTable, TableView

SHM_DIR = "/dev/shm"
CTL_MAGIC = 0x4C5443474E4946  # "FINGCTL" little-endian
CTL_HEAD_WORDS = 8  # magic, schema, max_slots, current word, writer pid, reserved x3
W_MAGIC, W_SCHEMA, W_SLOTS, W_CURRENT, W_WRITER_PID = range(5)
SLOT_WORDS = 4
SL_PID, SL_ACK, SL_HEARTBEAT = range(3)
DEFAULT_MAX_SLOTS = 256  # readers at once: workers plus replacements during a rolling restart
_NAME = re.compile(r"^fastingress-(\d+)-[0-9a-f]{8}(-ctl|-stats|-[re]\d+(\.tmp)?)$")


def pack_word(routes_gen: int, endpoints_gen: int) -> int:
    return (routes_gen << 32) | endpoints_gen


def unpack_word(word: int) -> tuple[int, int]:
    return word >> 32, word & 0xFFFFFFFF


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _map_file(path: str, writable: bool = False) -> mmap.mmap:
    """Map a whole file; a missing, unreadable or empty file is a TableError (the reader keeps its view)."""
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except OSError as exc:
        raise TableError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    except (OSError, ValueError) as exc:  # ValueError: "cannot mmap an empty file"
        raise TableError(f"cannot map {path}: {exc}") from exc
    finally:
        os.close(fd)


class ControlBlock:
    """int64 views over the control block: header words and reader slots."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        words = np.frombuffer(mm, dtype="<i8")
        self.head = words[:CTL_HEAD_WORDS]
        if int(self.head[W_MAGIC]) != CTL_MAGIC or int(self.head[W_SCHEMA]) != s.SCHEMA_VERSION:
            raise TableError("control block has a foreign magic or schema version")
        n = int(self.head[W_SLOTS])
        self.slots = words[CTL_HEAD_WORDS: CTL_HEAD_WORDS + n * SLOT_WORDS].reshape(n, SLOT_WORDS)

    def current(self) -> int:
        return int(self.head[W_CURRENT])  # one aligned 8-byte load


class TableWriter:
    """Creates the control block, publishes generations, reclaims what no reader uses."""

    def __init__(self, shm_dir: str = SHM_DIR, max_slots: int = DEFAULT_MAX_SLOTS) -> None:
        self.shm_dir = shm_dir
        remove_stale_segments(shm_dir)
        self.prefix = f"fastingress-{os.getpid()}-{secrets.token_hex(4)}"
        size = (CTL_HEAD_WORDS + max_slots * SLOT_WORDS) * 8
        path = self._path("ctl")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        head = np.frombuffer(mm, dtype="<i8", count=CTL_HEAD_WORDS)
        head[W_SCHEMA], head[W_SLOTS], head[W_WRITER_PID] = s.SCHEMA_VERSION, max_slots, os.getpid()
        head[W_MAGIC] = CTL_MAGIC
        del head
        self.ctl = ControlBlock(mm)
        self.routes_gen = 0
        self.endpoints_gen = 0
        self.live: dict[str, tuple[str, int]] = {}  # segment path -> ("r"|"e", generation)
        self.closed = False

    def _path(self, suffix: str) -> str:
        return os.path.join(self.shm_dir, f"{self.prefix}-{suffix}")

    @property
    def control_path(self) -> str:
        return self._path("ctl")

    def _write_file(self, tag: str, gen: int, parts: list[bytearray]) -> None:
        final = self._path(f"{tag}{gen}")
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, final)  # atomic: a reader never sees a partly written name
        self.live[final] = (tag, gen)

    def publish(self, routes: bytes | None, endpoints: bytes) -> tuple[int, int]:
        """Publish a new endpoints generation and, when `routes` is given, a new routes generation."""
        if routes is None and self.routes_gen == 0:
            raise TableError("the first publish needs a routes segment")
        self.endpoints_gen += 1
        eps = bytearray(endpoints)
        if routes is not None:
            self.routes_gen += 1
            rts = bytearray(routes)
            s.stamp_generation(rts, self.routes_gen, self.routes_gen)
            s.stamp_generation(eps, self.endpoints_gen, self.routes_gen)
            self._write_file("r", self.routes_gen, [rts, eps])
        else:
            s.stamp_generation(eps, self.endpoints_gen, self.routes_gen)
            self._write_file("e", self.endpoints_gen, [eps])
        self.ctl.head[W_CURRENT] = pack_word(self.routes_gen, self.endpoints_gen)  # written last
        self.reclaim()
        return self.routes_gen, self.endpoints_gen

    def readers(self) -> list[tuple[int, int, int, int]]:
        """(slot, pid, acked word, heartbeat ns) of every occupied slot."""
        return [(i, int(row[SL_PID]), int(row[SL_ACK]), int(row[SL_HEARTBEAT]))
                for i, row in enumerate(self.ctl.slots) if int(row[SL_PID]) != 0]

    def free_slot(self, slot: int) -> None:
        """Forget a reader (it exited): its acknowledgement no longer holds segments back."""
        self.ctl.slots[slot, SL_PID] = 0
        self.ctl.slots[slot, SL_ACK] = 0

    def reap_dead_readers(self) -> list[int]:
        """Free the slots of readers whose process is gone; return their pids."""
        dead = [pid for slot, pid, _, _ in self.readers() if not _is_alive(pid)]
        for slot, pid, _, _ in self.readers():
            if pid in dead:
                self.free_slot(slot)
        return dead

    def reclaim(self) -> int:
        """Unlink every segment all live readers have moved past; return how many."""
        acks = [unpack_word(ack) for _, _, ack, _ in self.readers()]
        min_r = min([a[0] for a in acks], default=self.routes_gen)
        min_e = min([a[1] for a in acks], default=self.endpoints_gen)
        count = 0
        for path, (tag, gen) in list(self.live.items()):
            current = self.routes_gen if tag == "r" else self.endpoints_gen
            floor = min_r if tag == "r" else min_e
            if gen < current and gen < floor:
                _unlink(path)
                del self.live[path]
                count += 1
        return count

    def close(self) -> None:
        """Unlink every segment and the control block (readers keep their mappings until they exit)."""
        if self.closed:
            return
        self.closed = True
        for path in list(self.live):
            _unlink(path)
        self.live.clear()
        _unlink(self.control_path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink our files left by writers that no longer run (a SIGKILLed supervisor); return names."""
    removed: list[str] = []
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _NAME.match(name)
        if m and int(m.group(1)) != os.getpid() and not _is_alive(int(m.group(1))):
            _unlink(os.path.join(shm_dir, name))
            removed.append(name)
    return removed


class TableReader:
    """A worker's end: notice a new generation, map it, hand back a TableView; ack and heartbeat."""

    def __init__(self, control_path: str, slot: int) -> None:
        self.control_path = control_path
        self.prefix = control_path[: -len("-ctl")]
        self.ctl = ControlBlock(_map_file(control_path, writable=True))
        if not 0 <= slot < len(self.ctl.slots):
            raise TableError(f"slot {slot} out of range")
        self.slot = slot
        row = self.ctl.slots[slot]
        row[SL_ACK] = 0  # hold every segment back until the first ack (set before reading the word)
        row[SL_PID] = os.getpid()
        self.word = 0
        self.view: TableView | None = None
        # superseded views, dropped later by release_retired(): unmapping costs tens of microseconds,
        # which the swap itself should not pay (a grace period, as in RCU)
        self.retired: list[TableView] = []

    def poll(self) -> TableView | None:
        """A new TableView when the generation word changed and its segments are sound, else None.

        Raises TableError when the new segments cannot be used; the caller keeps its current view.
        """
        word = self.ctl.current()
        if word == self.word or word == 0:
            return None
        rgen, egen = unpack_word(word)
        old = self.view
        endpoints: EndpointTable | None = None
        if old is not None and old.routes.generation == rgen:
            routes = old.routes  # endpoints-only change: route caches survive
        else:
            mm = _map_file(f"{self.prefix}-r{rgen}")
            buf = memoryview(mm)
            split = s.segment_length(buf)
            routes = RouteTable(buf[:split], keep=mm)
            embedded = EndpointTable(buf[split:], keep=mm)
            if embedded.generation == egen:
                endpoints = embedded
        if endpoints is None:
            mm = _map_file(f"{self.prefix}-e{egen}")
            endpoints = EndpointTable(mm, keep=mm)
        if endpoints.routes_generation != routes.generation:
            raise TableError(f"endpoints generation {egen} belongs to routes {endpoints.routes_generation}")
        self.word = word
        if old is not None:
            self.retired.append(old)
        self.view = TableView(routes, endpoints)
        return self.view

    def release_retired(self) -> None:
        """Drop superseded views (their segments are unmapped once no request holds them)."""
        self.retired.clear()

    def ack(self) -> None:
        """Tell the writer which generation this reader now serves (frees older segments)."""
        self.ctl.slots[self.slot, SL_ACK] = self.word

    def heartbeat(self, now_ns: int | None = None) -> None:
        self.ctl.slots[self.slot, SL_HEARTBEAT] = time.monotonic_ns() if now_ns is None else now_ns

    def release(self) -> None:
        """Leave the slot (clean exit)."""
        self.ctl.slots[self.slot, SL_ACK] = 0
        self.ctl.slots[self.slot, SL_PID] = 0
