"""Command line: argv -> Settings -> action. The only place in the control plane that exits the process.

Commands (a stable interface others script against):
  fastingress check DIR                              validate manifests offline
  fastingress routes --manifests DIR [--json]        print the compiled table
  fastingress explain --manifests DIR URL... [--json] which rule and backend each URL gets, and why
  fastingress serve [--manifests DIR] [--http-port N] [--https-port N] [--admin-port N] [--workers N]
  fastingress demo                                   the proxy on examples/demo with echo backends
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec
import orjson

from fastingress import __version__
from fastingress.compiler.describe import describe_config, render_routes_text
from fastingress.errors import ConfigError, ExitCode, SourceError
from fastingress.logs import setup_logging
from fastingress.settings import Settings
from fastingress.supervisor.explain import explain_url, render_text
from fastingress.supervisor.offline import OfflineBuild, build_from_manifests


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastingress", description="A fast Kubernetes Ingress controller.")
    parser.add_argument("--version", action="version", version=f"fastingress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a manifests directory offline")
    check.add_argument("directory")
    routes = sub.add_parser("routes", help="print the compiled route table")
    routes.add_argument("--manifests", required=True, metavar="DIR")
    routes.add_argument("--json", action="store_true")
    explain = sub.add_parser("explain", help="explain how URLs would be routed")
    explain.add_argument("--manifests", required=True, metavar="DIR")
    explain.add_argument("--json", action="store_true", help="one JSON object per line, one line per URL")
    explain.add_argument("urls", nargs="+", metavar="URL")
    serve = sub.add_parser("serve", help="run the supervisor and the workers")
    serve.add_argument("--manifests", metavar="DIR", help="serve a manifests directory instead of the Kubernetes API")
    _add_port_flags(serve)
    demo = sub.add_parser("demo", help="the proxy on the example manifests, with demo echo backends")
    _add_port_flags(demo)
    return parser


def _add_port_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-port", type=int, help="0 picks a free port (printed)")
    parser.add_argument("--https-port", type=int, help="0 picks a free port (printed)")
    parser.add_argument("--admin-port", type=int, help="0 picks a free port (printed)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per CPU core)")


def apply_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags override the environment."""
    overrides = {name: getattr(args, name) for name in ("http_port", "https_port", "admin_port", "workers")
                 if getattr(args, name, None) is not None}
    if getattr(args, "manifests", None):
        overrides["manifests_dir"] = args.manifests
    settings = msgspec.structs.replace(settings, **overrides)
    problems = settings.check()
    if problems:
        raise ConfigError(problems)
    return settings


def _print_problems(build: OfflineBuild) -> None:
    for problem in build.problems:
        print(str(problem), file=sys.stderr)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    build = build_from_manifests(args.directory, settings)
    for problem in build.problems:
        print(str(problem))
    rejected = sum(1 for p in build.problems if p.rejected)
    print(f"{len(build.problems)} problem(s), {rejected} object(s) rejected", file=sys.stderr)
    return ExitCode.ERROR if rejected else ExitCode.OK


def cmd_routes(args: argparse.Namespace, settings: Settings) -> int:
    build = build_from_manifests(args.manifests, settings)
    _print_problems(build)
    if args.json:
        sys.stdout.write(orjson.dumps(describe_config(build.config), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_routes_text(build.config))
    return ExitCode.OK


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    build = build_from_manifests(args.manifests, settings)
    _print_problems(build)
    for url in args.urls:
        answer = explain_url(build.view, url, https_port=settings.redirect_https_port)
        if args.json:
            sys.stdout.write(msgspec.json.encode(answer).decode() + "\n")
        else:
            print(render_text(answer))
    return ExitCode.OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from fastingress.supervisor.main import run_supervisor

    return run_supervisor(apply_flags(settings, args))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from fastingress.demo.run import run_demo

    return run_demo(apply_flags(settings, args))


COMMANDS = {"check": cmd_check, "routes": cmd_routes, "explain": cmd_explain, "serve": cmd_serve, "demo": cmd_demo}
OFFLINE = ("check", "routes", "explain")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_environ()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"fastingress: {problem}", file=sys.stderr)
        sys.exit(ExitCode.CONFIG)
    setup_logging(settings.log_format, "WARNING" if args.command in OFFLINE else settings.log_level)
    try:
        code = COMMANDS[args.command](args, settings)
    except SourceError as exc:
        print(f"fastingress: {exc}", file=sys.stderr)
        code = ExitCode.USAGE
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"fastingress: {problem}", file=sys.stderr)
        code = ExitCode.CONFIG
    sys.exit(code)
