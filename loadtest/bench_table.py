"""Shared route table costs by size: `python -m loadtest.bench_table [--sizes 100,1000,10000] [--json out.json]`.

For each size (Ingresses with one host and 3 paths each, every path its own Service with 3 endpoints)
it measures, on this machine:
- compile: `compile_config` over a model Snapshot (the supervisor's cost per change);
- emit: CompiledConfig -> routes and endpoints segment bytes, and the segment sizes;
- swap: `TableReader.poll()` after a publish, in a separate fresh worker-like process (median of many;
  full swaps = new routes and endpoints, endpoints-only swaps = pod churn), including the drop of
  the previous view (munmap); "views only" is the user-space part alone (header checks and numpy
  views over memory already mapped), which must not depend on the size at all;
- lookup: first hit of a host (builds its matcher) and warm `RouteTable.match` per call;
- worker memory: /proc/self/status of the worker process before attaching vs after swapping to the
  table and looking up 1,000 distinct hosts; RssAnon (private) and RssShmem (the shared table's
  pages this process touched) separately.

Targets (design.md section 2): swap flat across sizes and < 100 us; warm lookup < 2 us; compile of
10,000 Ingresses < 2 s; worker private memory growth for 10,000 Ingresses < 10 MB.

The worker side runs as `python -m loadtest.bench_table --worker CONTROL SIZE FULL EP` and imports only
the table package (as workers do), so its memory numbers are not inflated by the compiler.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from typing import Any

from fastingress.table.lookup import EndpointTable, RouteTable
from fastingress.table.shm import TableReader

FULL_SWAPS = 100
ENDPOINT_SWAPS = 300
DISTINCT_HOSTS = 1000
LOOKUP_PATH = b"/api/v1/items"  # misses the exact route, matches the "/api" prefix: the common case
TARGET_SWAP_US = 100.0
TARGET_WARM_US = 2.0
TARGET_COMPILE_10K_S = 2.0
TARGET_ANON_10K_MB = 10.0


def host_name(i: int) -> str:
    return f"app{i}.bench.example"


# --- the worker process ---


def _memory() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of this process, in kB."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def _poll_until_new(reader: TableReader) -> int:
    """Spin until poll() returns a new view; the CPU time of that successful poll() in ns.

    CPU time of this thread (user + kernel: the mmap and the page faults are included), not wall time:
    on a shared 2-core machine wall time mostly measures who else was scheduled.
    """
    while True:
        t0 = time.thread_time_ns()
        view = reader.poll()
        t1 = time.thread_time_ns()
        if view is not None:
            reader.ack()
            reader.release_retired()  # the worker does this on its slow tick, outside the swap
            return t1 - t0


def _lookups(reader: TableReader, size: int) -> dict[str, Any]:
    """First hits over DISTINCT_HOSTS hosts (memory measured around them), then warm per-call costs."""
    before = _memory()
    _poll_until_new(reader)
    view = reader.view
    assert view is not None
    table, eps = view.routes, view.endpoints
    hosts = [host_name(i).encode() for i in range(min(size, DISTINCT_HOSTS))]
    hosts += [host_name(i).encode() + b".other" for i in range(DISTINCT_HOSTS - len(hosts))]  # no route: 404s
    cold: list[int] = []
    for host in hosts:  # the first request for each host: probe the shared hash table, build its matcher
        t0 = time.perf_counter_ns()
        index = table.match(host, LOOKUP_PATH)
        cold.append(time.perf_counter_ns() - t0)
        if index >= 0:
            eps.endpoints(table.route(index).upstream)
    after = _memory()

    host = hosts[0]
    match = table.match
    number = 200_000
    warm = min(timeit.repeat(lambda: match(host, LOOKUP_PATH), number=number, repeat=5)) / number

    def request() -> object:
        entry = table.route(match(host, LOOKUP_PATH))
        return eps.endpoints(entry.upstream)

    warm_request = min(timeit.repeat(request, number=number, repeat=5)) / number
    return {"mem_before_kb": before, "mem_after_kb": after, "cold_lookup_us": statistics.median(cold) / 1000,
            "warm_lookup_us": warm * 1e6, "warm_request_us": warm_request * 1e6}


def worker(control: str, size: int, full_swaps: int, endpoint_swaps: int) -> dict[str, Any]:
    """Attach, measure memory and lookups, then time the swaps the parent publishes."""
    reader = TableReader(control, 0)  # maps only the small control block
    result = _lookups(reader, size)
    full = [_poll_until_new(reader) for _ in range(full_swaps)]
    endpoints_only = [_poll_until_new(reader) for _ in range(endpoint_swaps)]
    # the user-space part of a full swap alone: header checks and views over already-mapped memory
    current = reader.view
    assert current is not None
    routes_buf, eps_buf = current.routes.buf, current.endpoints.buf
    views = min(timeit.repeat(lambda: (RouteTable(routes_buf), EndpointTable(eps_buf)), number=2000, repeat=5)) / 2000
    reader.release()
    result.update({
        "swap_full_us": statistics.median(full) / 1000,
        "swap_full_p90_us": statistics.quantiles(full, n=10)[-1] / 1000,
        "swap_endpoints_us": statistics.median(endpoints_only) / 1000,
        "swap_endpoints_p90_us": statistics.quantiles(endpoints_only, n=10)[-1] / 1000,
        "swap_views_only_us": views * 1e6,
    })
    return result


# --- the supervisor side ---


def build_snapshot(size: int) -> Any:
    """`size` Ingresses, one host and 3 paths each; one Service with one 3-endpoint slice per path."""
    # imported here: the worker process must not load the model or the compiler (clean memory numbers)
    from fastingress.model.objects import (
        Backend,
        Endpoint,
        EndpointPort,
        EndpointSlice,
        Ingress,
        IngressPath,
        IngressRule,
        ObjectKey,
        Service,
        ServicePort,
        Snapshot,
    )

    ingresses, services, slices = {}, {}, {}
    for i in range(size):
        paths = []
        for j, (path, path_type) in enumerate((("/", "Prefix"), ("/api", "Prefix"), ("/static/app.js", "Exact"))):
            name = f"app{i}-s{j}"
            key = ObjectKey("bench", name)
            paths.append(IngressPath(path=path, path_type=path_type, backend=Backend(service=name, port_number=80)))
            services[key] = Service(key=key, ports=(ServicePort(port=80, name="http", target_port=8080),))
            slice_key = ObjectKey("bench", f"{name}-abcde")
            n = 3 * (3 * i + j)
            slices[slice_key] = EndpointSlice(
                key=slice_key, service=name, ports=(EndpointPort(port=8080, name="http"),),
                endpoints=tuple(Endpoint(addresses=(f"10.{(n + k) >> 16 & 255}.{(n + k) >> 8 & 255}.{(n + k) & 255}",))
                                for k in range(3)))
        key = ObjectKey("bench", f"app{i}")
        ingresses[key] = Ingress(key=key, seq=i, class_name="fastingress",
                                 rules=(IngressRule(host=host_name(i), paths=tuple(paths)),))
    return Snapshot(ingresses=ingresses, services=services, slices=slices)


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    """Fastest of `repeat` runs in seconds, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _wait_ack(writer: Any, word: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    from fastingress.table.shm import SL_ACK

    deadline = time.monotonic() + timeout
    while int(writer.ctl.slots[0, SL_ACK]) != word:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError("worker did not acknowledge in time")
        time.sleep(0.001)  # idle while the worker measures: the publisher must not compete for the CPU


def measure(size: int) -> dict[str, Any]:
    from fastingress.compiler import compile_config
    from fastingress.compiler.emit import emit_endpoints, emit_routes
    from fastingress.table.shm import TableWriter, pack_word

    snapshot = build_snapshot(size)
    repeat = 5 if size <= 1000 else 2
    compile_s, (config, problems) = _best(lambda: compile_config(snapshot), repeat)
    if problems:
        raise RuntimeError(f"benchmark snapshot has problems: {problems[:3]}")
    emit_routes_s, routes = _best(lambda: emit_routes(config), repeat)
    emit_endpoints_s, endpoints = _best(lambda: emit_endpoints(config.endpoints), repeat)
    result: dict[str, Any] = {
        "ingresses": size, "routes": sum(len(vh.routes) for vh in config.vhosts), "upstreams": len(config.upstreams),
        "endpoints": sum(len(ue.endpoints) for ue in config.endpoints),
        "compile_ms": compile_s * 1000, "emit_routes_ms": emit_routes_s * 1000,
        "emit_endpoints_ms": emit_endpoints_s * 1000,
        "routes_bytes": len(routes), "endpoints_bytes": len(endpoints),
    }
    writer = TableWriter(max_slots=4)
    proc: subprocess.Popen[bytes] | None = None
    try:
        writer.publish(routes, endpoints)
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.bench_table", "--worker", writer.control_path, str(size),
             str(FULL_SWAPS), str(ENDPOINT_SWAPS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_ack(writer, pack_word(1, 1), proc)
        swaps = FULL_SWAPS + ENDPOINT_SWAPS
        for k in range(swaps):
            rgen, egen = writer.publish(routes if k < FULL_SWAPS else None, endpoints)
            if k < swaps - 1:  # after the last swap the worker releases its slot and exits
                _wait_ack(writer, pack_word(rgen, egen), proc)
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed ({proc.returncode}): {err.decode()}")
        result.update(json.loads(out.decode().splitlines()[-1]))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        writer.close()
    before, after = result.pop("mem_before_kb"), result.pop("mem_after_kb")
    for key in ("VmRSS", "RssAnon", "RssShmem"):
        result[f"worker_{key}_growth_mb"] = (after[key] - before[key]) / 1024
    result["worker_VmRSS_before_mb"] = before["VmRSS"] / 1024
    return result


COLUMNS: list[tuple[str, str | tuple[str, ...], str]] = [
    ("Ingresses", "ingresses", "{:,}"), ("routes", "routes", "{:,}"), ("compile ms", "compile_ms", "{:.1f}"),
    ("emit routes ms", "emit_routes_ms", "{:.1f}"), ("emit endpoints ms", "emit_endpoints_ms", "{:.1f}"),
    ("routes seg KB", "routes_bytes", "{:,.0f}"), ("endpoints seg KB", "endpoints_bytes", "{:,.0f}"),
    ("swap full µs (p50/p90)", ("swap_full_us", "swap_full_p90_us"), "{:.1f} / {:.1f}"),
    ("swap endpoints µs (p50/p90)", ("swap_endpoints_us", "swap_endpoints_p90_us"), "{:.1f} / {:.1f}"),
    ("views only µs", "swap_views_only_us", "{:.1f}"),
    ("cold host µs", "cold_lookup_us", "{:.1f}"), ("warm match µs", "warm_lookup_us", "{:.2f}"),
    ("warm match+route+endpoints µs", "warm_request_us", "{:.2f}"),
    ("worker RssAnon +MB", "worker_RssAnon_growth_mb", "{:.2f}"),
    ("worker RssShmem +MB", "worker_RssShmem_growth_mb", "{:.2f}"),
    ("worker VmRSS +MB", "worker_VmRSS_growth_mb", "{:.2f}"),
]


def _cell(row: dict[str, Any], key: str | tuple[str, ...], fmt: str) -> str:
    if isinstance(key, tuple):
        return fmt.format(*(row[k] for k in key))
    value = row[key] / 1024 if key.endswith("_bytes") else row[key]
    return fmt.format(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(row, key, fmt) for _, key, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per target: PASS/FAIL with the measured value."""
    out = []
    worst_swap = max(max(r["swap_full_us"], r["swap_endpoints_us"]) for r in rows)
    spread = max(r["swap_full_us"] for r in rows) / min(r["swap_full_us"] for r in rows)
    out.append(f"{'PASS' if worst_swap < TARGET_SWAP_US else 'FAIL'} swap median < {TARGET_SWAP_US:.0f} us "
               f"(worst {worst_swap:.1f} us; full-swap spread across sizes x{spread:.2f})")
    worst_warm = max(r["warm_lookup_us"] for r in rows)
    out.append(f"{'PASS' if worst_warm < TARGET_WARM_US else 'FAIL'} warm lookup < {TARGET_WARM_US} us "
               f"(worst {worst_warm:.2f} us)")
    for r in rows:
        if r["ingresses"] >= 10_000:
            compile_s, anon = r["compile_ms"] / 1000, r["worker_RssAnon_growth_mb"]
            out.append(f"{'PASS' if compile_s < TARGET_COMPILE_10K_S else 'FAIL'} compile of {r['ingresses']:,} "
                       f"Ingresses < {TARGET_COMPILE_10K_S} s ({compile_s:.2f} s)")
            out.append(f"{'PASS' if anon < TARGET_ANON_10K_MB else 'FAIL'} worker private memory growth at "
                       f"{r['ingresses']:,} Ingresses < {TARGET_ANON_10K_MB} MB ({anon:.2f} MB)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_table", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated Ingress counts")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--worker", nargs=4, metavar=("CONTROL", "SIZE", "FULL", "EP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        control, size, full, ep = args.worker
        print(json.dumps(worker(control, int(size), int(full), int(ep))), flush=True)
        return 0
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(measure(size))
        print(f"measured {size:,} Ingresses", file=sys.stderr, flush=True)
    print(markdown(rows))
    print()
    print("\n".join(verdicts(rows)))
    if args.json:
        machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                   "platform": platform.platform()}
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
