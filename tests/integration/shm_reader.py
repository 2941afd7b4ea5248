"""A worker-like table reader for tests/integration/test_shm_publish.py, run as a fresh interpreter.

    python tests/integration/shm_reader.py CONTROL_PATH SLOT FINAL_ENDPOINTS_GEN DEADLINE_S

Polls the control block continuously, looks up continuously on the view it holds, acks every new
generation and checks every lookup against the content rules below, which make a torn or mixed table
visible: all names of routes generation R contain R, every endpoint port equals the endpoints
generation E and every endpoint address encodes R and the upstream index. It also keeps the
previous view as an "in-flight request" and re-checks it after acking the new one (its segment may
already be unlinked; the mapping must stay intact).

Prints `progress <distinct words seen>` lines while running and a final JSON summary line; exits 0
after seeing FINAL_ENDPOINTS_GEN, 1 with a message on stderr at the first inconsistency, 2 on timeout.
Imports only the table package, as a worker does.
"""

from __future__ import annotations

import json
import sys
import time

from fastingress.errors import TableError
from fastingress.table.lookup import NO_ROUTE, TableView
from fastingress.table.shm import TableReader, unpack_word

STABLE_HOSTS = 6
GEN_HOSTS = 3


# --- the content rules, shared with the writer in test_shm_publish.py ---


def exact_path(rgen: int) -> str:
    return f"/x{rgen}"


def group_prefix(rgen: int) -> str:
    return f"/g{rgen % 5}"


def stable_host(i: int) -> str:
    return f"s{i}.test"


def gen_host(rgen: int, j: int) -> str:
    return f"r{rgen}-{j}.test"


def upstream_name(kind: str, rgen: int, i: int) -> str:
    return f"ns/{kind}-{rgen}-{i}:80"


def endpoint_count(egen: int, upstream: int) -> int:
    return 1 + (egen + upstream) % 3


def endpoint_address(rgen: int, upstream: int, k: int) -> str:
    return f"10.{rgen % 250}.{upstream}.{k}"


def probes(rgen: int) -> list[tuple[bytes, bytes, str | None]]:
    """(host, path, expected upstream name or None for no route) for routes generation `rgen`."""
    out: list[tuple[bytes, bytes, str | None]] = []
    for i in range(STABLE_HOSTS):
        host = stable_host(i).encode()
        out.append((host, exact_path(rgen).encode(), upstream_name("x", rgen, i)))
        out.append((host, (exact_path(rgen) + "/sub").encode(), upstream_name("root", rgen, i)))
        out.append((host, (group_prefix(rgen) + "/a/b").encode(), upstream_name("g", rgen, i)))
        out.append((host, group_prefix(rgen).encode(), upstream_name("g", rgen, i)))
        out.append((host, b"/other", upstream_name("root", rgen, i)))
    for j in range(GEN_HOSTS):
        out.append((gen_host(rgen, j).encode(), b"/any/path", upstream_name("gen", rgen, j)))
        out.append((gen_host(rgen + 1, j).encode(), b"/", None))  # the next generation's hosts: not yet
        if rgen > 1:
            out.append((gen_host(rgen - 1, j).encode(), b"/", None))  # the previous generation's: gone
    out.append((b"unknown.test", b"/", None))
    return out


# --- checking ---


class Inconsistent(Exception):
    """A lookup disagreed with the content rules: the view is torn or mixed."""


def check_lookup(view: TableView, host: bytes, path: bytes, expected: str | None) -> None:
    routes, eps = view.routes, view.endpoints
    rgen, egen = routes.generation, eps.generation
    if eps.routes_generation != rgen:
        raise Inconsistent(f"endpoints {egen} belong to routes {eps.routes_generation}, view has routes {rgen}")
    index = routes.match(host, path)
    if expected is None:
        if index != NO_ROUTE:
            raise Inconsistent(f"({rgen},{egen}) {host!r}{path!r}: expected no route, got route {index}")
        return
    if index == NO_ROUTE:
        raise Inconsistent(f"({rgen},{egen}) {host!r}{path!r}: expected {expected}, got no route")
    entry = routes.route(index)
    if entry.host != host.decode() or entry.upstream < 0:
        raise Inconsistent(f"({rgen},{egen}) {host!r}{path!r}: route of host {entry.host!r}, upstream "
                           f"{entry.upstream}")
    name = routes.upstream(entry.upstream).name
    if name != expected:
        raise Inconsistent(f"({rgen},{egen}) {host!r}{path!r}: upstream {name}, expected {expected}")
    u = entry.upstream
    got = eps.endpoints(u)
    want = tuple((endpoint_address(rgen, u, k), egen) for k in range(endpoint_count(egen, u)))
    if got != want:
        raise Inconsistent(f"({rgen},{egen}) upstream {u} {name}: endpoints {got}, expected {want}")


def check_view(view: TableView, probe_list: list[tuple[bytes, bytes, str | None]], start: int, n: int) -> int:
    """Check `n` probes starting at `start` (round robin); return the next start."""
    size = len(probe_list)
    for k in range(n):
        host, path, expected = probe_list[(start + k) % size]
        check_lookup(view, host, path, expected)
    return (start + n) % size


def run(control: str, slot: int, final_egen: int, deadline_s: float) -> int:
    deadline = time.monotonic() + deadline_s
    reader = TableReader(control, slot)
    reader.heartbeat()
    words: set[int] = set()
    routes_gens: set[int] = set()
    view: TableView | None = None
    inflight: TableView | None = None
    probe_list: list[tuple[bytes, bytes, str | None]] = []
    inflight_probes: list[tuple[bytes, bytes, str | None]] = []
    cursor = lookups = 0
    last_word = 0
    reported = 0
    try:
        while True:
            new = reader.poll()
            if new is not None:
                if reader.word <= last_word:
                    raise Inconsistent(f"generation word went from {last_word:#x} to {reader.word:#x}")
                last_word = reader.word
                inflight, inflight_probes = view, probe_list  # an in-flight request keeps the old view
                view = new
                if new.routes.generation not in routes_gens:
                    probe_list = probes(new.routes.generation)
                routes_gens.add(new.routes.generation)
                words.add(reader.word)
                check_view(view, probe_list, 0, len(probe_list))  # the whole view, once, before acking
                lookups += len(probe_list)
                reader.ack()
                reader.heartbeat()
                if inflight is not None:  # after the ack the writer may unlink it; our mapping stays valid
                    check_view(inflight, inflight_probes, 0, len(inflight_probes))
                    lookups += len(inflight_probes)
                if len(words) - reported >= 50:
                    reported = len(words)
                    print(f"progress {reported}", flush=True)
                if unpack_word(reader.word)[1] >= final_egen:
                    break
            if view is not None:
                cursor = check_view(view, probe_list, cursor, 8)
                lookups += 8
            if time.monotonic() > deadline:
                print(f"timeout: saw {len(words)} generations, last {unpack_word(last_word)}", file=sys.stderr)
                return 2
    except (Inconsistent, TableError) as exc:
        print(f"INCONSISTENT after {lookups} lookups: {exc}", file=sys.stderr, flush=True)
        return 1
    reader.release()
    print(json.dumps({"words": len(words), "routes_generations": len(routes_gens), "lookups": lookups}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
