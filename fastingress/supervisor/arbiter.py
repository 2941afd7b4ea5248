"""The worker arbiter: spawn, watch, replace, scale, roll and stop the worker processes (gunicorn-style).

Theory of operation (style.md section 12; gunicorn's `arbiter.py` as a reconcile loop):

- *Desired vs actual.* `target` workers should be running. `check(now)`, called by the main loop at
  least every 100 ms (and on SIGCHLD), reaps exited children, reads every worker's control-block slot
  (pid, acknowledged generation, heartbeat), escalates stuck workers, advances a rolling restart and
  spawns or retires workers until the actual count matches. Nothing here blocks or sleeps.
- *Spawning.* Each worker is a fresh interpreter (`subprocess.Popen`, never a fork after threads
  exist) running `settings.worker_module` with its control-block slot, the stats file, a worker id,
  the settings as JSON (ports already resolved), the key store's directory (`--keys DIR`) and the
  inherited descriptors of its listening sockets (`--listen-fds HTTP[,HTTPS]`). A worker takes the
  lowest slot none of ours holds; the slot is cleared when the worker is reaped, and its stats
  counters are folded into `retired` so that the metrics' counters never go backwards.
- *Listeners.* `wanted` holds one listener index per target worker; each running worker serves one
  index (`listeners.py` says why the supervisor owns the sockets). A rolling restart's new worker
  shares the index of the old one it replaces; a crashed or stuck worker's replacement takes its
  index (its queue waited); scaling up adds the lowest free index, scaling down drops the index of
  a worker without one or of the oldest; a socket whose index is no longer wanted is closed at once
  (the retiring worker's copy goes with its drain), and all of them when stopping.
- *Ready.* A worker is ready once its slot carries its pid and a non-zero acknowledged generation:
  it has mapped the table and its listener serves. Until then it is "booting".
- *Exits.* The reaper (`os.waitpid(pid, WNOHANG)` per worker) explains every exit: exit code name or
  signal name, with an OOM hint for SIGKILL. Exits we asked for (retire, drain) are INFO; any other
  exit is a crash: counted in `restarts` and replaced after an exponential backoff (0.1 s doubling
  to 5 s; a worker that lived 30 s resets it).
- *Halting.* Restarting cannot fix a worker that cannot bind or load: three `BOOT_FAILED` (or
  `TABLE_INCOMPATIBLE`) exits in a row, or five crashes within 10 s before any worker was ever ready
  (a boot-failure storm), stop the whole supervisor with an ERROR line and exit code BOOT_FAILED.
- *Liveness.* Workers write a CLOCK_MONOTONIC heartbeat from their own event loop. A worker whose
  heartbeat (or, before it registered, whose start) is older than the timeout gets SIGTERM, a
  replacement, and SIGKILL 5 s later if it is still there (gunicorn's `murder_workers`).
- *Signals* arrive as `handle_<name>` calls from the main loop (the handlers only enqueued):
  TERM/INT drain (SIGTERM to all, SIGKILL stragglers after drain_timeout_s + 5 s, exit 0; a second
  one escalates to QUIT); QUIT stops fast; HUP rolls: one new worker, wait until it acknowledged the
  current generation, SIGTERM one old worker, repeat, so capacity never drops; TTIN/TTOU scale by
  one (never below one).
- *Snapshot.* After every check `state` is replaced by an immutable `ArbiterState` for the admin
  thread (readiness, /metrics).

Must not: log from signal handlers, fork, sleep, or touch anything the reconciler owns.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time

import msgspec
import numpy as np

from fastingress.errors import ExitCode
from fastingress.settings import Settings
from fastingress.supervisor.listeners import Listeners
from fastingress.supervisor.metrics import Row, counters_only
from fastingress.table.shm import TableWriter, unpack_word
from fastingress.table.stats import ROW_WORDS, StatsBlock

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.1  # first replacement delay after a crash
BACKOFF_MAX_S = 5.0  # the delay doubles up to this, so a crash loop costs little CPU and log volume
STABLE_AFTER_S = 30.0  # a worker that lived this long before crashing resets the backoff
BOOT_FAILURES_TO_HALT = 3  # BOOT_FAILED exits in a row: the port or the table is the problem, not luck
STORM_CRASHES, STORM_WINDOW_S = 5, 10.0  # crashes within the window before any worker was ready
KILL_AFTER_S = 5.0  # SIGTERM -> SIGKILL for a worker that stopped heartbeating
DRAIN_EXTRA_S = 5.0  # on top of drain_timeout_s before a draining worker is SIGKILLed
QUIT_GRACE_S = 2.0  # SIGQUIT -> SIGKILL: workers exit at once, this only covers interpreter teardown
_FATAL_EXITS = (ExitCode.BOOT_FAILED, ExitCode.TABLE_INCOMPATIBLE)


@dataclasses.dataclass(slots=True)
class _Worker:
    """One child process, owned by the main loop."""

    worker_id: int
    slot: int
    listener: int  # index of the listening sockets it serves (Listeners)
    proc: subprocess.Popen[bytes]
    started: float
    ready: bool = False
    retiring: bool = False  # we asked it to stop: its exit is expected, no replacement for it
    kill_at: float | None = None  # SIGKILL when still alive at this time
    acked: int = 0  # acknowledged generation word from its slot
    heartbeat_ns: int = 0  # 0 until it registered in its slot

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as the admin server sees it."""

    worker_id: int
    slot: int
    pid: int
    state: str  # "booting", "running" or "stopping"
    acked_routes_generation: int
    acked_endpoints_generation: int


@dataclasses.dataclass(frozen=True, slots=True)
class ArbiterState:
    """Immutable snapshot for the admin thread; replaced as a whole after each check."""

    workers: tuple[WorkerInfo, ...] = ()
    target: int = 0
    restarts: int = 0
    stopping: bool = False
    retired: Row = dataclasses.field(default_factory=lambda: np.zeros(ROW_WORDS, dtype=np.int64))


def describe_exit(code: int) -> str:
    """An exit status (`Popen.returncode` convention: negative = signal) in words."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return "killed by SIGKILL (OOM killer?)" if -code == signal.SIGKILL else f"killed by {name}"
    try:
        return f"exited with code {code} ({ExitCode(code).name})"
    except ValueError:
        return f"exited with code {code}"


class Arbiter:
    """Keeps `target` workers alive; see the module docstring."""

    def __init__(self, settings: Settings, writer: TableWriter, stats: StatsBlock, keys_dir: str = "") -> None:
        self._settings = settings
        self._writer = writer
        self._stats = stats
        self._keys_dir = keys_dir  # the KeyStore's directory; "" passes no --keys (workers serve no HTTPS)
        self._settings_json = msgspec.json.encode(settings).decode()
        self._workers: dict[int, _Worker] = {}  # by pid
        self._target = settings.workers or os.cpu_count() or 1
        self._wanted: set[int] = set(range(self._target))  # listener indices, one per target worker
        self._listeners = Listeners(settings.bind_address, settings.http_port,
                                    settings.https_port if keys_dir else None)
        self._started = False
        self._next_id = 1
        self._restarts = 0
        self._retired: Row = np.zeros(ROW_WORDS, dtype=np.int64)
        self._backoff = BACKOFF_MIN_S
        self._next_spawn = 0.0
        self._boot_failures = 0  # fatal exits in a row
        self._crashes: collections.deque[float] = collections.deque()
        self._any_ready = False
        self._rolling: list[int] = []  # pids of old workers a rolling restart still has to replace
        self._roll_new: int | None = None  # pid of the replacement being waited for
        self._stop_deadline: float | None = None
        self._stop_code: int = ExitCode.OK
        self.exit_code: int | None = None  # set when the supervisor should exit with it
        self.state = ArbiterState(target=self._target)

    # --- the main loop's entry points ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Spawn the first workers (called after the first publish)."""
        if not self._started and self._stop_deadline is None:
            self._started = True
            self.check(now)

    def check(self, now: float) -> None:
        """One reconcile pass: reap, observe slots, escalate, roll, scale, then publish `state`."""
        self._reap(now)
        if self._stop_deadline is not None:
            self._check_stop(now)
        elif self._started:
            self._observe_slots()
            self._check_liveness(now)
            self._roll(now)
            self._scale(now)
        self._publish_state()

    def kill_all(self) -> None:
        """Last resort on an unexpected supervisor error: SIGKILL and reap every worker."""
        for w in list(self._workers.values()):
            self._signal(w, signal.SIGKILL)
            w.proc.wait()
            self._forget(w)
        self._listeners.close()

    # --- signals ------------------------------------------------------------------------------------

    def handle_term(self, now: float) -> None:
        self._graceful_stop(now, "SIGTERM")

    def handle_int(self, now: float) -> None:
        self._graceful_stop(now, "SIGINT")

    def _graceful_stop(self, now: float, why: str) -> None:
        if self._stop_deadline is not None:
            self.handle_quit(now)  # a second TERM/INT: stop now
            return
        log.info("graceful stop: draining %d workers (up to %.0f s)", len(self._workers),
                 self._settings.drain_timeout_s, extra={"reason": why})
        self._begin_stop(now, signal.SIGTERM, self._settings.drain_timeout_s + DRAIN_EXTRA_S, ExitCode.OK)

    def handle_quit(self, now: float) -> None:
        log.info("fast stop: %d workers", len(self._workers), extra={"reason": "SIGQUIT"})
        self._begin_stop(now, signal.SIGQUIT, QUIT_GRACE_S, self._stop_code)

    def handle_hup(self, now: float) -> None:
        if self._stop_deadline is not None or not self._started:
            return
        old = sorted((w for w in self._workers.values() if not w.retiring), key=lambda w: w.started)
        self._rolling = [w.pid for w in old]
        self._roll_new = None
        log.info("rolling restart of %d workers", len(old), extra={"reason": "SIGHUP", "count": len(old)})

    def handle_ttin(self, now: float) -> None:
        self._wanted.add(min(set(range(len(self._wanted) + 1)) - self._wanted))
        self._target = len(self._wanted)
        log.info("workers: target raised to %d", self._target, extra={"reason": "SIGTTIN", "count": self._target})

    def handle_ttou(self, now: float) -> None:
        if len(self._wanted) > 1:
            active = sorted((w for w in self._workers.values() if not w.retiring), key=lambda w: w.started)
            served = {w.listener for w in active}
            unserved = sorted(self._wanted - served)  # a crashed worker's, not replaced yet: no drain needed
            oldest = [w.listener for w in active if w.listener in self._wanted]
            self._wanted.discard(unserved[0] if unserved else oldest[0])
            self._listeners.retain(self._wanted)
        self._target = len(self._wanted)
        log.info("workers: target lowered to %d", self._target, extra={"reason": "SIGTTOU", "count": self._target})

    def handle_chld(self, now: float) -> None:
        self.check(now)

    # --- spawning and reaping -----------------------------------------------------------------------

    def _spawn(self, now: float, listener: int) -> _Worker | None:
        try:
            fds = self._listeners.fds(listener)
        except OSError as exc:
            self.halt(now, f"{exc.strerror}; check the listen address and ports (restarting will not help)")
            return None
        used = {w.slot for w in self._workers.values()}
        slot = next((i for i in range(len(self._stats.rows)) if i not in used), None)
        if slot is None:
            log.error("no free control-block slot for another worker", extra={"count": len(used)})
            return None
        worker_id, self._next_id = self._next_id, self._next_id + 1
        self._writer.free_slot(slot)
        self._stats.clear_row(slot)
        cmd = [sys.executable, "-m", self._settings.worker_module, "--control", self._writer.control_path,
               "--slot", str(slot), "--stats", self._stats.path, "--worker-id", str(worker_id),
               "--settings", self._settings_json, *(["--keys", self._keys_dir] if self._keys_dir else []),
               "--listen-fds", ",".join(map(str, fds))]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, close_fds=True, pass_fds=fds)
        except OSError as exc:
            log.error("cannot start worker %d: %s", worker_id, exc, extra={"worker": worker_id})
            self._schedule_replacement(now, lived_s=0.0)
            return None
        w = _Worker(worker_id, slot, listener, proc, now)
        self._workers[proc.pid] = w
        log.info("worker %d started (pid %d, slot %d, listener %d)", worker_id, proc.pid, slot, listener,
                 extra={"worker": worker_id})
        return w

    def _reap(self, now: float) -> None:
        for w in list(self._workers.values()):
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: the status is lost
                pid, status = w.pid, 0
            if pid == 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            w.proc.returncode = code  # so that Popen never waits for it again
            self._forget(w)
            self._on_exit(w, code, now)

    def _forget(self, w: _Worker) -> None:
        """Drop an exited worker: free its slot, keep its counters in `retired`."""
        self._workers.pop(w.pid, None)
        self._writer.free_slot(w.slot)
        self._retired = self._retired + counters_only(self._stats.rows[w.slot])
        self._stats.clear_row(w.slot)

    def _on_exit(self, w: _Worker, code: int, now: float) -> None:
        why = describe_exit(code)
        lived_s = now - w.started
        extra = {"worker": w.worker_id, "reason": why, "duration_ms": round(lived_s * 1000.0)}
        if w.retiring or self._stop_deadline is not None:
            log.info("worker %d (pid %d) %s", w.worker_id, w.pid, why, extra=extra)
            return
        self._restarts += 1
        self._boot_failures = self._boot_failures + 1 if code in _FATAL_EXITS else 0
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - STORM_WINDOW_S:
            self._crashes.popleft()
        if self._boot_failures >= BOOT_FAILURES_TO_HALT:
            log.warning("worker %d (pid %d) %s after %.1f s", w.worker_id, w.pid, why, lived_s, extra=extra)
            self.halt(now, f"workers failed to boot {self._boot_failures} times in a row (last: {why}); "
                            "restarting will not help: check the listen address and ports and the worker log")
        elif not self._any_ready and len(self._crashes) >= STORM_CRASHES:
            log.warning("worker %d (pid %d) %s after %.1f s", w.worker_id, w.pid, why, lived_s, extra=extra)
            self.halt(now, f"boot-failure storm: {len(self._crashes)} workers crashed within "
                            f"{STORM_WINDOW_S:.0f} s and none ever became ready (last: {why})")
        else:
            delay = self._schedule_replacement(now, lived_s)
            log.warning("worker %d (pid %d) %s after %.1f s; replacing it in %.1f s", w.worker_id, w.pid, why,
                        lived_s, delay, extra=extra)

    def _schedule_replacement(self, now: float, lived_s: float) -> float:
        """Delay the next spawn by the current backoff (then doubled); the delay in seconds."""
        if lived_s >= STABLE_AFTER_S:
            self._backoff = BACKOFF_MIN_S
        self._next_spawn = max(self._next_spawn, now + self._backoff)
        self._backoff = min(self._backoff * 2.0, BACKOFF_MAX_S)
        return self._next_spawn - now

    def halt(self, now: float, message: str, code: int = ExitCode.BOOT_FAILED, reason: str = "BootFailed") -> None:
        """Stop everything because an operator must act: one ERROR line, then a drain, then exit `code`."""
        log.error("halting: %s", message, extra={"reason": reason})
        self._begin_stop(now, signal.SIGTERM, self._settings.drain_timeout_s + DRAIN_EXTRA_S, code)

    # --- observing and converging -------------------------------------------------------------------

    def _observe_slots(self) -> None:
        slots = {slot: (pid, ack, hb) for slot, pid, ack, hb in self._writer.readers()}
        for w in self._workers.values():
            pid, ack, hb = slots.get(w.slot, (0, 0, 0))
            if pid != w.pid:
                continue
            w.acked, w.heartbeat_ns = ack, hb
            if not w.ready and ack != 0:
                w.ready = self._any_ready = True
                self._boot_failures = 0
                log.info("worker %d ready (pid %d)", w.worker_id, w.pid,
                         extra={"worker": w.worker_id, "generation": unpack_word(ack)[0]})

    def _check_liveness(self, now: float) -> None:
        mono = time.monotonic()
        timeout = self._settings.worker_heartbeat_timeout_s
        for w in list(self._workers.values()):
            if w.kill_at is not None:
                if now >= w.kill_at:
                    log.warning("worker %d (pid %d) still running; SIGKILL", w.worker_id, w.pid,
                                extra={"worker": w.worker_id})
                    self._signal(w, signal.SIGKILL)
                    w.kill_at = float("inf")
                continue
            age = mono - w.heartbeat_ns / 1e9 if w.heartbeat_ns else now - w.started
            if age > timeout:
                self._restarts += 1
                log.warning("worker %d (pid %d) sent no heartbeat for %.1f s; terminating and replacing it",
                            w.worker_id, w.pid, age, extra={"worker": w.worker_id, "reason": "HeartbeatTimeout"})
                self._retire(w, now, KILL_AFTER_S, "heartbeat timeout")

    def _roll(self, now: float) -> None:
        if not self._rolling:
            return
        self._rolling = [pid for pid in self._rolling if pid in self._workers and not self._workers[pid].retiring]
        grace = self._settings.drain_timeout_s + DRAIN_EXTRA_S
        while self._rolling and self._workers[self._rolling[0]].listener not in self._wanted:
            old = self._workers[self._rolling.pop(0)]  # its index was dropped (TTOU): retired, not replaced
            self._retire(old, now, grace, f"scaling down to {self._target}")
        new = self._workers.get(self._roll_new) if self._roll_new is not None else None
        if new is not None and not new.retiring and new.listener not in self._wanted:
            self._retire(new, now, grace, f"scaling down to {self._target}")
        if new is None or new.retiring:
            self._roll_new = None
            if self._rolling and now >= self._next_spawn:
                spawned = self._spawn(now, self._workers[self._rolling[0]].listener)  # shares its sockets
                self._roll_new = spawned.pid if spawned else None
            elif not self._rolling:
                log.info("rolling restart complete", extra={"count": len(self._workers)})
            return
        if not (new.ready and new.heartbeat_ns and unpack_word(new.acked)[0] == self._writer.routes_gen):
            return
        self._roll_new = None
        # the old worker it replaces; if that one died meanwhile, the new one serves its index instead
        # and the next old worker gets a replacement of its own
        if self._rolling and self._workers[self._rolling[0]].listener == new.listener:
            old = self._workers[self._rolling.pop(0)]
            self._retire(old, now, grace, f"rolling restart, replaced by worker {new.worker_id}")
        if not self._rolling:
            log.info("rolling restart complete", extra={"count": len(self._workers)})

    def _scale(self, now: float) -> None:
        serving: dict[int, list[_Worker]] = {}
        for w in sorted((w for w in self._workers.values() if not w.retiring), key=lambda w: w.started):
            serving.setdefault(w.listener, []).append(w)
        if not self._rolling:  # during a roll an index has its old and its new worker for a while
            for index, ws in serving.items():  # one worker per wanted index: the newest stays
                for w in ws if index not in self._wanted else ws[:-1]:
                    self._retire(w, now, self._settings.drain_timeout_s + DRAIN_EXTRA_S,
                                 f"scaling down to {self._target}")
        if now >= self._next_spawn:  # also mid-roll: a crashed worker's queue must not wait for the roll
            for index in sorted(self._wanted - serving.keys()):
                if self._spawn(now, index) is None:
                    return

    def _retire(self, w: _Worker, now: float, grace_s: float, why: str) -> None:
        """SIGTERM (drain) with a SIGKILL deadline; its exit is expected."""
        log.info("stopping worker %d (pid %d): %s", w.worker_id, w.pid, why, extra={"worker": w.worker_id})
        w.retiring = True
        w.kill_at = now + grace_s
        self._signal(w, signal.SIGTERM)

    # --- stopping -----------------------------------------------------------------------------------

    def _begin_stop(self, now: float, sig: int, grace_s: float, code: int) -> None:
        deadline = now + grace_s
        self._stop_deadline = deadline if self._stop_deadline is None else min(deadline, self._stop_deadline)
        self._stop_code = code
        self._rolling, self._roll_new = [], None
        self._listeners.close()  # each socket closes with the last worker's copy, at its drain
        for w in self._workers.values():
            w.retiring = True
            w.kill_at = None  # the stop deadline governs now
            self._signal(w, sig)
        self._check_stop(now)

    def _check_stop(self, now: float) -> None:
        assert self._stop_deadline is not None
        if self._workers and now >= self._stop_deadline:
            log.warning("%d workers still running at the stop deadline; SIGKILL", len(self._workers),
                        extra={"count": len(self._workers)})
            self.kill_all()
        if not self._workers:
            self.exit_code = self._stop_code

    def _signal(self, w: _Worker, sig: int) -> None:
        try:
            os.kill(w.pid, sig)  # safe: an unreaped child's pid cannot be reused
        except ProcessLookupError:
            pass

    def _publish_state(self) -> None:
        infos = []
        for w in sorted(self._workers.values(), key=lambda w: w.slot):
            state = "stopping" if w.retiring else "running" if w.ready else "booting"
            rgen, egen = unpack_word(w.acked)
            infos.append(WorkerInfo(w.worker_id, w.slot, w.pid, state, rgen, egen))
        self.state = ArbiterState(workers=tuple(infos), target=self._target, restarts=self._restarts,
                                  stopping=self._stop_deadline is not None, retired=self._retired)
