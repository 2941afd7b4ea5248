"""`python -m loadtest` (or `make bench`): fastingress side by side with nginx and haproxy, same machine, same run.

Runs the scenarios of loadtest/scenarios (all by default, or `--scenario a,b`), writes
`loadtest/results/<timestamp>.json` (machine, versions, every round) and a Markdown summary with PNG
plots next to it, and prints the summary. `--quick` is a smoke of about a minute (one short round
each). Installs nothing: it says what is missing (Debian: `apt-get install nginx-light haproxy wrk
util-linux`; tls-handshake also needs a C compiler, `gcc`) and exits 2. Everything it starts listens
on 127.0.0.1 and is stopped by PID.

`--python` names the interpreter that runs fastingress and the aiohttp baseline: use a PGO/LTO build
(as production images ship) for figures comparable with nginx; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from loadtest import harness, report
from loadtest.scenario import execute
from loadtest.scenarios import SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="all", help=f"comma-separated, of: {', '.join(SCENARIOS)} (or all)")
    parser.add_argument("--quick", action="store_true", help="one 2 s round per server and scenario: a smoke test")
    # many short rounds, interleaved: a slow spell of this shared VM (seconds to minutes) then covers a few
    # rounds of every server alike instead of all rounds of one (docs/performance.md, "Reproducibility")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per server, interleaved (default 15)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per round after a 1 s warm-up (default 1)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for fastingress and the aiohttp baseline")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON, Markdown and plots")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [n.strip() for n in args.scenario.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    missing = harness.missing_tools(tool for name in names for tool in SCENARIOS[name].tools)
    if missing:
        print(f"missing: {', '.join(missing)}; install with: {harness.INSTALL}", file=sys.stderr)
        return 2
    opts = harness.Options(rounds=1 if args.quick else args.rounds, seconds=2.0 if args.quick else args.seconds,
                           warmup_s=0.5 if args.quick else 1.0, python=args.python, quick=args.quick)
    started = time.gmtime()
    uname = os.uname()
    results: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
        "machine": {"sysname": uname.sysname, "release": uname.release, "machine": uname.machine},
        "cpus": os.cpu_count(), "versions": harness.versions(args.python),
        "options": {"rounds": opts.rounds, "seconds": opts.seconds, "quick": opts.quick}, "scenarios": []}
    scenarios: list[dict[str, object]] = []
    results["scenarios"] = scenarios
    failed: list[str] = []
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            scenarios.append(execute(SCENARIOS[name], opts))
        except Exception as exc:  # one failed scenario must not throw away the others' figures
            print(f"== {name} FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
            scenario = SCENARIOS[name]
            scenarios.append({"name": name, "description": scenario.description, "rounds": {}, "median": {},
                              "ratios": {}, "extra": {"FAILED": f"{type(exc).__name__}: {exc}"}})
    args.out.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y-%m-%dT%H%M%SZ", started) + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    md, plots = report.write_report(results, args.out, stem)
    print(md.read_text())
    print(f"results: {args.out / (stem + '.json')}, {md}, {', '.join(str(p) for p in plots)}", file=sys.stderr)
    if failed:
        print(f"failed scenario(s): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
