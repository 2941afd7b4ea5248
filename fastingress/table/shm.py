"""Shared memory: the supervisor's TableWriter and the workers' TableReader (design.md section 2).

Theory of operation:
- The *control block* `/dev/shm/<prefix>-ctl` (created by the writer, fixed size) holds the magic,
  the current generations packed in one aligned 64-bit word (routes generation << 32 | endpoints
  generation), a ring of descriptors per kind (generation, arena, offset, length) and one slot per
  reader: pid, acknowledged word, heartbeat (CLOCK_MONOTONIC ns).
- Segments live in an *arena* file `<prefix>-a<N>` that each reader maps once. A publish writes the
  new segments completely into free space of the arena (pwrite), fills their descriptors, and only
  then stores the new word. A full publish writes the routes segment and its endpoints segment side
  by side; an endpoints-only publish writes just an endpoints segment and keeps the routes segment
  (and every worker-side route cache on it).
- A reader that sees a new word reads the descriptors, checks each segment's header (magic, schema,
  kind, generation, CRC, length) in place and swaps one reference: no system call, no copy, O(1) in
  the table's size (open + mmap + page faults of a file per generation cost ~200 us on a VM; see
  docs/design/0001). Numpy views are built on first use.
- Reclamation (RCU-style): a segment's space is reused once every live reader has acknowledged a
  later generation. A reader acknowledges only after it stopped reading older generations (workers
  read the table synchronously inside one event-loop callback), so reused space is never read.
- When the arena is full a bigger one is created; readers map it when a descriptor names it, and the
  old file is unlinked once nothing in it is live. Slots of dead readers are freed by
  `reap_dead_readers()`; `close()` unlinks everything; a new writer removes files left by writers
  whose pid is gone (e.g. after a SIGKILL).

Ordering: `ControlBlock` is the only code that touches words another process races on, each with
its ordering (`atomics`: release stores pair with acquire loads; plain numpy on x86-64, libatomic
elsewhere). Descriptors are invalidated (generation -1) before they are rewritten and readers re-read
the generation after the other fields, and every segment header carries its generation: a reader
that races the writer sees a mismatch and keeps its current view until its next poll. The argument,
pair by pair: docs/design/0001, "Memory ordering".

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
from fastingress.table import atomics
from fastingress.table import schema as s
from fastingress.table.lookup import EndpointTable, RouteTable, TableView

SHM_DIR = "/dev/shm"
CTL_MAGIC = 0x4C5443474E4946  # "FINGCTL" little-endian
CTL_HEAD_WORDS = 8  # magic, schema, max_slots, current word, writer pid, reserved x3
W_MAGIC, W_SCHEMA, W_SLOTS, W_CURRENT, W_WRITER_PID = range(5)
DESC_SLOTS = 64  # descriptors kept per kind: a reader more than 64 generations behind polls again
DESC_WORDS = 4
D_GEN, D_ARENA, D_OFFSET, D_LENGTH = range(4)
SLOT_WORDS = 4
SL_PID, SL_ACK, SL_HEARTBEAT = range(3)
DEFAULT_MAX_SLOTS = 256  # readers at once: workers plus replacements during a rolling restart
REGION_ALIGN = 4096  # segments start on a page: a swap touches the fewest pages
MIN_ARENA_BYTES = 1 << 20
_NAME = re.compile(r"^fastingress-(\d+)-[0-9a-f]{8}-(ctl|stats|a\d+)$")


def pack_word(routes_gen: int, endpoints_gen: int) -> int:
    return (routes_gen << 32) | endpoints_gen


def unpack_word(word: int) -> tuple[int, int]:
    return word >> 32, word & 0xFFFFFFFF


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
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


def _control_words(max_slots: int) -> int:
    return CTL_HEAD_WORDS + 2 * DESC_SLOTS * DESC_WORDS + max_slots * SLOT_WORDS


class ControlBlock:
    """int64 views over the control block, and every access to a word the other side races on.

    Each method says which side calls it and pairs with a method of the other side; the ordering is
    chosen once here (`atomics.ordered_words`: TableError when it cannot be had).
    """

    def __init__(self, mm: mmap.mmap, force_libatomic: bool = False) -> None:
        self.mm = mm
        words = np.frombuffer(mm, dtype="<i8")
        self.head = words[:CTL_HEAD_WORDS]
        if int(self.head[W_MAGIC]) != CTL_MAGIC or int(self.head[W_SCHEMA]) != s.SCHEMA_VERSION:
            raise TableError("control block has a foreign magic or schema version")
        n = int(self.head[W_SLOTS])
        if len(words) < _control_words(n):
            raise TableError("control block too short")
        self.ordered = atomics.ordered_words(words, force_libatomic)
        ring = DESC_SLOTS * DESC_WORDS
        self.routes_ring, self.endpoints_ring = CTL_HEAD_WORDS, CTL_HEAD_WORDS + ring  # first word of each
        self.routes_desc = words[CTL_HEAD_WORDS: CTL_HEAD_WORDS + ring].reshape(DESC_SLOTS, DESC_WORDS)
        self.endpoints_desc = words[CTL_HEAD_WORDS + ring: CTL_HEAD_WORDS + 2 * ring].reshape(DESC_SLOTS, DESC_WORDS)
        self.slots_base = CTL_HEAD_WORDS + 2 * ring
        self.slots = words[self.slots_base: self.slots_base + n * SLOT_WORDS].reshape(n, SLOT_WORDS)

    # --- the current word ---
    def current(self) -> int:
        """Reader: the current word; acquire, pairs with `set_current` (polled every tick)."""
        return self.ordered.load_acquire(W_CURRENT)

    def set_current(self, word: int) -> None:
        """Writer: store the word last (release), then fence: later loads of the slots come after it."""
        self.ordered.store_release(W_CURRENT, word)
        self.ordered.fence()  # pairs with the fence in `claim`

    # --- descriptors: a seqlock whose sequence is the generation ---
    def describe(self, ring: int, gen: int, arena: int, offset: int, length: int) -> None:
        """Writer: invalidate, fill, set the generation; each a release store, so -1 precedes every field."""
        at = ring + gen % DESC_SLOTS * DESC_WORDS
        store = self.ordered.store_release
        store(at + D_GEN, -1)
        store(at + D_ARENA, arena)
        store(at + D_OFFSET, offset)
        store(at + D_LENGTH, length)
        store(at + D_GEN, gen)

    def descriptor(self, ring: int, gen: int) -> tuple[int, int, int]:
        """Reader: (arena, offset, length) of `gen`; each load acquires, so the fields precede the re-read."""
        at = ring + gen % DESC_SLOTS * DESC_WORDS
        first, arena, offset, length = self.ordered.load_acquire_run(at, DESC_WORDS)  # D_GEN first
        if first != gen or self.ordered.load_acquire(at + D_GEN) != gen:  # re-read: a rewrite may be under way
            raise TableError(f"generation {gen} is not described (yet, or any more)")
        return arena, offset, length

    # --- reader slots ---
    def claim(self, slot: int, pid: int) -> None:
        """Reader, before its first `current`: hold everything back, then fence (pairs with `set_current`)."""
        at = self.slots_base + slot * SLOT_WORDS
        self.ordered.store_release(at + SL_ACK, 0)
        self.ordered.store_release(at + SL_PID, pid)
        self.ordered.fence()

    def ack(self, slot: int, word: int) -> None:
        """Reader: release, so its loads of older segments are done before the writer can see the ack."""
        self.ordered.store_release(self.slots_base + slot * SLOT_WORDS + SL_ACK, word)

    def leave(self, slot: int) -> None:
        """Reader, last: release its slot (its loads are done before the writer sees it free)."""
        at = self.slots_base + slot * SLOT_WORDS
        self.ordered.store_release(at + SL_ACK, 0)
        self.ordered.store_release(at + SL_PID, 0)

    def heartbeat(self, slot: int, now_ns: int) -> None:
        """Reader: a plain store; a liveness hint that publishes nothing needs no ordering."""
        self.slots[slot, SL_HEARTBEAT] = now_ns

    def readers(self) -> list[tuple[int, int, int, int]]:
        """Writer: (slot, pid, acked word, heartbeat ns) of every occupied slot.

        pid, then ack, both acquire: pairs with `ack`/`leave`, so space is reused only after the
        reader's last load of it. The plain scan only picks candidates; it runs after `set_current`'s
        fence, which is what `claim` relies on.
        """
        load = self.ordered.load_acquire
        found: list[tuple[int, int, int, int]] = []
        for slot in np.flatnonzero(self.slots[:, SL_PID]).tolist():
            at = self.slots_base + slot * SLOT_WORDS
            pid = load(at + SL_PID)
            if pid != 0:
                found.append((slot, pid, load(at + SL_ACK), int(self.slots[slot, SL_HEARTBEAT])))
        return found

    def free(self, slot: int) -> None:
        """Writer: forget a reader that was reaped or is yet to start (exit and spawn order these stores)."""
        self.slots[slot, SL_PID] = 0
        self.slots[slot, SL_ACK] = 0


class Arena:
    """The writer's handle on one arena file."""

    def __init__(self, path: str, ident: int, capacity: int) -> None:
        self.path = path
        self.ident = ident
        self.capacity = capacity
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(self.fd, capacity)  # sparse: tmpfs allocates pages only when written

    def write(self, offset: int, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            offset += (n := os.pwrite(self.fd, view, offset))
            view = view[n:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        _unlink(self.path)


class Region:
    """A live segment: where it is and which generation it serves."""

    __slots__ = ("arena", "gen", "length", "offset", "tag")

    def __init__(self, tag: str, gen: int, arena: int, offset: int, length: int) -> None:
        self.tag, self.gen, self.arena, self.offset, self.length = tag, gen, arena, offset, length


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


class TableWriter:
    """Creates the control block, publishes generations, reclaims what no reader uses."""

    def __init__(self, shm_dir: str = SHM_DIR, max_slots: int = DEFAULT_MAX_SLOTS,
                 force_libatomic: bool = False) -> None:
        """`force_libatomic`: order words through libatomic even on x86-64 (tests of the arm64 path)."""
        self.shm_dir = shm_dir
        remove_stale_segments(shm_dir)
        self.prefix = f"fastingress-{os.getpid()}-{secrets.token_hex(4)}"
        size = _control_words(max_slots) * 8
        fd = os.open(self._path("ctl"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        head = np.frombuffer(mm, dtype="<i8", count=CTL_HEAD_WORDS)
        head[W_SCHEMA], head[W_SLOTS], head[W_WRITER_PID] = s.SCHEMA_VERSION, max_slots, os.getpid()
        head[W_MAGIC] = CTL_MAGIC
        del head
        try:
            self.ctl = ControlBlock(mm, force_libatomic)
        except TableError:
            _unlink(self._path("ctl"))
            raise
        # plain stores: readers attach only after the supervisor spawned them, which orders these
        self.ctl.routes_desc[:, D_GEN] = -1
        self.ctl.endpoints_desc[:, D_GEN] = -1
        self.routes_gen = 0
        self.endpoints_gen = 0
        self.arenas: dict[int, Arena] = {}
        self.arena: Arena | None = None
        self.live: list[Region] = []
        self.closed = False

    def _path(self, suffix: str) -> str:
        return os.path.join(self.shm_dir, f"{self.prefix}-{suffix}")

    @property
    def control_path(self) -> str:
        return self._path("ctl")

    # --- space ---
    def _allocate(self, length: int) -> tuple[Arena, int]:
        """First fit among the gaps between live regions of the current arena; a bigger arena if none."""
        arena = self.arena
        if arena is not None:
            pos = 0
            for start, end in sorted((r.offset, r.offset + r.length) for r in self.live if r.arena == arena.ident):
                if start - pos >= length:
                    return arena, pos
                pos = max(pos, _round_up(end, REGION_ALIGN))
            if arena.capacity - pos >= length:
                return arena, pos
        capacity = max(MIN_ARENA_BYTES, 2 * (arena.capacity if arena else 0))
        while capacity < 4 * length:  # room for the current generation, the next, and readers behind
            capacity *= 2
        ident = (arena.ident + 1) if arena else 1
        new = Arena(self._path(f"a{ident}"), ident, capacity)
        self.arenas[ident] = new
        self.arena = new
        return new, 0

    # --- publishing ---
    def publish(self, routes: bytes | None, endpoints: bytes) -> tuple[int, int]:
        """Publish a new endpoints generation and, when `routes` is given, a new routes generation."""
        if routes is None and self.routes_gen == 0:
            raise TableError("the first publish needs a routes segment")
        self.reclaim()  # what readers released since the last publish can take the new segments
        eps = bytearray(endpoints)
        egen = self.endpoints_gen + 1
        if routes is not None:
            rgen = self.routes_gen + 1
            rts = bytearray(routes)
            s.stamp_generation(rts, rgen, rgen)
            s.stamp_generation(eps, egen, rgen)
            split = _round_up(len(rts), REGION_ALIGN)
            arena, offset = self._allocate(split + len(eps))
            arena.write(offset, rts)
            arena.write(offset + split, eps)
            self.live.append(Region("r", rgen, arena.ident, offset, len(rts)))
            self.live.append(Region("e", egen, arena.ident, offset + split, len(eps)))
            self.ctl.describe(self.ctl.routes_ring, rgen, arena.ident, offset, len(rts))
            self.ctl.describe(self.ctl.endpoints_ring, egen, arena.ident, offset + split, len(eps))
            self.routes_gen = rgen
        else:
            s.stamp_generation(eps, egen, self.routes_gen)
            arena, offset = self._allocate(len(eps))
            arena.write(offset, eps)
            self.live.append(Region("e", egen, arena.ident, offset, len(eps)))
            self.ctl.describe(self.ctl.endpoints_ring, egen, arena.ident, offset, len(eps))
        self.endpoints_gen = egen
        self.ctl.set_current(pack_word(self.routes_gen, egen))  # written last
        self.reclaim()
        return self.routes_gen, self.endpoints_gen

    # --- readers ---
    def readers(self) -> list[tuple[int, int, int, int]]:
        """(slot, pid, acked word, heartbeat ns) of every occupied slot."""
        return self.ctl.readers()

    def free_slot(self, slot: int) -> None:
        """Forget a reader (it exited): its acknowledgement no longer holds segments back."""
        self.ctl.free(slot)

    def reap_dead_readers(self) -> list[int]:
        """Free the slots of readers whose process is gone (reap children first); return their pids."""
        dead = []
        for slot, pid, _, _ in self.readers():
            if not pid_alive(pid):
                self.free_slot(slot)
                dead.append(pid)
        return dead

    def oldest_acked(self) -> tuple[int, int]:
        """The oldest (routes, endpoints) generations a live reader may still read: the smallest acknowledged
        ones (0 for a reader that has acknowledged none yet: it holds everything back), else the current ones."""
        acks = [unpack_word(ack) for _, _, ack, _ in self.readers()]
        return (min([a[0] for a in acks], default=self.routes_gen),
                min([a[1] for a in acks], default=self.endpoints_gen))

    def reclaim(self) -> int:
        """Free every segment all live readers have moved past, and arenas left empty; return how many."""
        min_r, min_e = self.oldest_acked()
        keep: list[Region] = []
        for region in self.live:
            current, floor = (self.routes_gen, min_r) if region.tag == "r" else (self.endpoints_gen, min_e)
            if region.gen < current and region.gen < floor:
                continue
            keep.append(region)
        count = len(self.live) - len(keep)
        self.live = keep
        used = {r.arena for r in keep}
        for ident in [i for i in self.arenas if i not in used and self.arenas[i] is not self.arena]:
            self.arenas.pop(ident).close()
        return count

    def live_segments(self) -> set[str]:
        """The live segments as "r<gen>"/"e<gen>" names (for tests and /debug)."""
        return {f"{r.tag}{r.gen}" for r in self.live}

    def close(self) -> None:
        """Unlink the arenas and the control block (readers keep their mappings until they exit)."""
        if self.closed:
            return
        self.closed = True
        for arena in self.arenas.values():
            arena.close()
        self.arenas.clear()
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
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            _unlink(os.path.join(shm_dir, name))
            removed.append(name)
    return removed


class TableReader:
    """A worker's end: notice a new generation, swap to it, hand back a TableView; ack and heartbeat."""

    def __init__(self, control_path: str, slot: int, force_libatomic: bool = False) -> None:
        """`force_libatomic`: order words through libatomic even on x86-64 (tests of the arm64 path)."""
        self.control_path = control_path
        self.prefix = control_path[: -len("-ctl")]
        self.ctl = ControlBlock(_map_file(control_path, writable=True), force_libatomic)
        if not 0 <= slot < len(self.ctl.slots):
            raise TableError(f"slot {slot} out of range")
        self.slot = slot
        self.ctl.claim(slot, os.getpid())  # holds every segment back until the first ack
        self.word = 0
        self.view: TableView | None = None
        self.arenas: dict[int, memoryview] = {}
        # superseded views: dropped by release_retired() on the worker's slow tick, off the swap path
        self.retired: list[TableView] = []

    def _arena(self, ident: int) -> memoryview:
        mv = self.arenas.get(ident)
        if mv is None:
            mv = memoryview(_map_file(f"{self.prefix}-a{ident}"))
            # older arenas stay mapped only while a view still holds them
            self.arenas = {i: v for i, v in self.arenas.items() if i > ident - 2}
            self.arenas[ident] = mv
        return mv

    def _segment(self, ring: int, gen: int) -> memoryview:
        arena, offset, length = self.ctl.descriptor(ring, gen)
        mv = self._arena(arena)
        if offset < 0 or offset + length > len(mv):
            raise TableError(f"generation {gen} lies outside arena {arena}")
        return mv[offset: offset + length]

    def poll(self) -> TableView | None:
        """A new TableView when the generation word changed and its segments are sound, else None.

        Raises TableError when the new segments cannot be used; the caller keeps its current view.
        """
        word = self.ctl.current()
        if word == self.word or word == 0:
            return None
        rgen, egen = unpack_word(word)
        old = self.view
        if old is not None and old.routes.generation == rgen:
            routes = old.routes  # endpoints-only change: route caches survive
        else:
            routes = RouteTable(self._segment(self.ctl.routes_ring, rgen), check_trailer=False)
        endpoints = EndpointTable(self._segment(self.ctl.endpoints_ring, egen), check_trailer=False)
        if routes.generation != rgen or endpoints.generation != egen:
            raise TableError(f"segments of generation ({routes.generation}, {endpoints.generation}) where "
                             f"({rgen}, {egen}) was described: raced the writer")
        if endpoints.routes_generation != rgen:
            raise TableError(f"endpoints generation {egen} belongs to routes {endpoints.routes_generation}")
        self.word = word
        if old is not None:
            self.retired.append(old)
        self.view = TableView(routes, endpoints)
        return self.view

    def release_retired(self) -> None:
        """Drop superseded views (call once no request reads them any more)."""
        self.retired.clear()

    def ack(self) -> None:
        """Tell the writer which generation this reader now serves: older ones may be reused."""
        self.ctl.ack(self.slot, self.word)

    def heartbeat(self, now_ns: int | None = None) -> None:
        self.ctl.heartbeat(self.slot, time.monotonic_ns() if now_ns is None else now_ns)

    def release(self) -> None:
        """Leave the slot (clean exit)."""
        self.ctl.leave(self.slot)
