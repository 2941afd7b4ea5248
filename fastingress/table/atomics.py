"""Acquire loads, release stores and full fences on the int64 words of the control block.

The supervisor and the workers exchange control-block words without locks (docs/design/0001,
"Memory ordering"). Three operations carry the whole protocol:
- a *release* store: every load and store this process made before it is done before the stored
  value can be seen;
- an *acquire* load: when it reads a value a release store wrote, every load and store this process
  makes after it sees at least what the storing process had done before that store (the pairing);
- a *full fence*: additionally orders earlier stores before later loads, which release/acquire does
  not (and x86-64 does not either). Needed only where both sides store one word and then load the
  other's (a reader registering in its slot while the writer publishes and then reads the slots).

Two implementations behind one interface, chosen once when the control block is attached:
- `PlainWords` (x86-64, 64-bit process): TSO never reorders a load with a later load or store, nor
  a store with an earlier load or store (Intel SDM vol. 3A, "Memory Ordering in P6 and More Recent
  Processor Families"), so an aligned 8-byte numpy load already is an acquire load and a numpy store
  a release store. The C compiler cannot move them either: each is its own opaque call from the
  interpreter. Zero cost. The fence takes and drops an uncontended lock: taking a lock needs an atomic
  read-modify-write, and every one on x86-64 is a LOCK-prefixed instruction, a full fence (~130 ns).
- `LibatomicWords` (every other machine, and tests anywhere): GCC's libatomic through ctypes,
  `__atomic_load_8(p, __ATOMIC_ACQUIRE)`, `__atomic_store_8(p, v, __ATOMIC_RELEASE)` and
  `atomic_thread_fence(__ATOMIC_SEQ_CST)` (LDAR or LDAPR, STLR, DMB ISH on arm64); ~0.5 us a call
  (docs/design/0001). Without libatomic, attaching raises TableError: never run silently unordered.

Must not: be used for words only one process touches, or for hints whose order does not matter (the
reader heartbeat): plain numpy access is cheaper there. Indexes are word indexes into one 1-D,
aligned, little-endian int64 array that must outlive the accessor (it keeps a reference).
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from fastingress.errors import TableError

# GCC's memory-order constants (__ATOMIC_ACQUIRE, __ATOMIC_RELEASE, __ATOMIC_SEQ_CST)
ACQUIRE, RELEASE, SEQ_CST = 2, 3, 5
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class OrderedWords(Protocol):
    """Ordered access to the words of one int64 array in shared memory."""

    def load_acquire(self, index: int) -> int: ...

    def load_acquire_run(self, index: int, count: int) -> list[int]:
        """`count` words from `index` on, each an acquire load, in index order."""
        ...

    def store_release(self, index: int, value: int) -> None: ...

    def fence(self) -> None: ...


def is_tso() -> bool:
    """True where plain aligned 8-byte loads and stores are ordered (a 64-bit process on x86-64).

    A 32-bit interpreter on an x86-64 kernel also reports "x86_64", but it may split an 8-byte access.
    """
    return platform.machine().lower() in ("x86_64", "amd64") and sys.maxsize > 2**32


def ordered_words(words: np.ndarray, force_libatomic: bool = False) -> OrderedWords:
    """The accessor for this machine: plain numpy on x86-64, libatomic elsewhere (or when forced).

    Raises TableError when libatomic is needed and missing.
    """
    if is_tso() and not force_libatomic:
        return PlainWords(words)
    return LibatomicWords(words)


def _check_words(words: np.ndarray) -> None:
    if words.dtype != np.dtype("<i8") or words.ndim != 1 or not words.flags.c_contiguous:
        raise ValueError("ordered words need a 1-D, contiguous, little-endian int64 array")
    if words.ctypes.data % 8:
        raise ValueError("ordered words must be 8-byte aligned (an unaligned access is not atomic)")


def _check_run(index: int, count: int, length: int) -> None:
    if not 0 <= index <= index + count <= length:
        raise IndexError(f"words {index}..{index + count - 1} outside 0..{length - 1}")


_FENCE_LOCK = threading.Lock()  # process-private, never contended: an instruction, not a protocol


class PlainWords:
    """x86-64: numpy's aligned 8-byte loads and stores already are acquire and release."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray) -> None:
        _check_words(words)
        self.words = words

    def load_acquire(self, index: int) -> int:
        return int(self.words.item(index))  # hot path: .item() is 90 ns, int(words[i]) 170 ns

    def load_acquire_run(self, index: int, count: int) -> list[int]:
        _check_run(index, count, len(self.words))
        run: list[int] = self.words[index: index + count].tolist()  # loads in order: 0.25 us, not 4 x 0.2
        return run

    def store_release(self, index: int, value: int) -> None:
        self.words[index] = value

    def fence(self) -> None:
        _FENCE_LOCK.acquire()  # a LOCK-prefixed read-modify-write: a full fence on x86-64
        _FENCE_LOCK.release()


class Libatomic:
    """The three libatomic entry points we call, with their C signatures."""

    __slots__ = ("fence", "load", "store")

    def __init__(self, lib: ctypes.CDLL) -> None:
        # by subscript: `lib.__atomic_load_8` inside a class body would be name-mangled
        load, store, fence = lib["__atomic_load_8"], lib["__atomic_store_8"], lib["atomic_thread_fence"]
        load.argtypes, load.restype = (ctypes.c_void_p, ctypes.c_int), ctypes.c_int64
        store.argtypes, store.restype = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int), None
        fence.argtypes, fence.restype = (ctypes.c_int,), None
        self.load: Callable[[int, int], int] = load
        self.store: Callable[[int, int, int], None] = store
        self.fence: Callable[[int], None] = fence


def open_libatomic(name: str) -> Libatomic:
    """Load the library `name` as libatomic; TableError when it or one of our symbols is missing."""
    try:
        return Libatomic(ctypes.CDLL(name))
    except OSError as exc:
        raise TableError(f"{platform.machine()} needs libatomic to order shared-memory words (install "
                         f"libatomic1); refusing to read the table unordered: {exc}") from exc
    except AttributeError as exc:  # atomic_thread_fence appeared in GCC 7's libatomic (LIBATOMIC_1.2)
        raise TableError(f"{name} lacks a libatomic symbol we need: {exc}") from exc


@functools.cache
def _libatomic() -> Libatomic:
    """libatomic, loaded once per process: by its soname, else wherever find_library finds it."""
    try:
        return open_libatomic("libatomic.so.1")
    except TableError:
        from ctypes.util import find_library  # only now: it may run ldconfig or gcc

        return open_libatomic(find_library("atomic") or "libatomic.so")


class LibatomicWords:
    """Any machine: libatomic's acquire loads, release stores and sequentially consistent fences."""

    __slots__ = ("_base", "_count", "_lib", "_writeable", "words")

    def __init__(self, words: np.ndarray) -> None:
        _check_words(words)
        self._lib = _libatomic()
        self.words = words  # keeps the mapping alive: _base is a raw address into it
        self._base = words.ctypes.data  # 1.4 us: once, not per access
        self._count = len(words)
        self._writeable = bool(words.flags.writeable)

    def _address(self, index: int) -> int:
        if not 0 <= index < self._count:  # a raw pointer: check what numpy would check
            raise IndexError(f"word {index} outside 0..{self._count - 1}")
        return self._base + 8 * index

    def load_acquire(self, index: int) -> int:
        return self._lib.load(self._address(index), ACQUIRE)

    def load_acquire_run(self, index: int, count: int) -> list[int]:
        _check_run(index, count, self._count)
        load, address = self._lib.load, self._base + 8 * index
        return [load(address + 8 * i, ACQUIRE) for i in range(count)]

    def store_release(self, index: int, value: int) -> None:
        address = self._address(index)
        if not self._writeable:  # a store through the pointer would be a SIGSEGV, not an exception
            raise ValueError("assignment destination is read-only")
        if not INT64_MIN <= value <= INT64_MAX:  # ctypes would wrap silently; numpy raises
            raise OverflowError(f"{value} does not fit an int64 word")
        self._lib.store(address, value, RELEASE)

    def fence(self) -> None:
        self._lib.fence(SEQ_CST)
