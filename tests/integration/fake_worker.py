"""FAKE worker for the supervisor's integration tests: the worker contract, and no proxying at all.

Honours exactly what `fastingress.supervisor.arbiter` expects of `workers.main`: the same argv; listen
on the inherited HTTP socket (`--listen-fds`), exit BOOT_FAILED when that fails; register in
its control-block slot, map and acknowledge each generation; a heartbeat every 50 ms and a stats
row every second; SIGTERM = clean exit 0 (nothing in flight to drain), SIGQUIT = exit now, SIGINT
ignored; exit when the parent changes. With `--keys DIR`, it checks before each acknowledgement that
the certificate files the new table names (and the self-signed fallback) are in DIR, and prints a
`fake worker N: missing certificate file` line to stderr when one is not: the supervisor must write
them before it publishes, and keep them while a worker may serve that table. Run as
`python -m tests.integration.fake_worker`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from types import FrameType

import msgspec

from fastingress.errors import ExitCode, TableError
from fastingress.settings import Settings
from fastingress.table import stats as st
from fastingress.table.lookup import RouteTable
from fastingress.table.shm import TableReader

TICK_S = 0.05


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--control", "--stats", "--settings"):
        p.add_argument(flag, required=True)
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--worker-id", type=int, required=True)
    p.add_argument("--keys", default="")
    p.add_argument("--listen-fds", required=True)
    args = p.parse_args()
    msgspec.json.decode(args.settings, type=Settings)  # the contract: valid Settings JSON
    stopping: list[int] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGQUIT, lambda signum, frame: os._exit(0))
    try:
        reader = TableReader(args.control, args.slot)
    except TableError:
        return ExitCode.TABLE_INCOMPATIBLE
    reader.heartbeat()
    try:
        sock = socket.socket(fileno=int(args.listen_fds.split(",")[0]))
        sock.listen(16)
    except OSError as exc:
        print(f"fake worker {args.worker_id}: cannot listen: {exc}", file=sys.stderr, flush=True)
        return ExitCode.BOOT_FAILED
    stats = st.StatsBlock(args.stats)
    parent, last_stats = os.getppid(), 0.0
    while not stopping and os.getppid() == parent:
        try:
            view = reader.poll()
            if view is not None:
                check_key_files(args.keys, view.routes, args.worker_id)
                reader.ack()
        except TableError:
            pass
        reader.heartbeat()
        if time.monotonic() - last_stats >= 1.0:
            last_stats = time.monotonic()
            row = [0] * st.ROW_WORDS
            row[st.REQ_2XX], row[st.LATENCY_BASE], row[st.LATENCY_SUM_US] = 1, 1, 500
            stats.write_row(args.slot, row)
        time.sleep(TICK_S)
    reader.release()
    return ExitCode.OK


def check_key_files(keys: str, routes: RouteTable, worker_id: int) -> None:
    """Complain on stderr about every certificate file of `routes` missing from `keys`."""
    if not keys:
        return
    names = ["self-signed.pem", *(routes.cert(i).fingerprint + ".pem" for i in range(len(routes.certs)))]
    for name in names:
        if not os.path.isfile(os.path.join(keys, name)):
            print(f"fake worker {worker_id}: missing certificate file {name} for generation {routes.generation}",
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
