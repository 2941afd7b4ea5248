"""`fastingress demo`: the proxy on examples/demo with real echo backends, until Ctrl-C.

Starts one echo backend per demo Service (web, api, blog on 127.0.0.1:18081-18083, the ports the
demo manifests name), prints the URLs to try, runs the supervisor on the manifests, and on Ctrl-C
(SIGINT: the supervisor drains) stops the backends by PID. Must not: leave a process behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec

from fastingress.demo.echo import EchoStartError, start_echo
from fastingress.errors import ConfigError
from fastingress.settings import Settings
from fastingress.supervisor.main import run_supervisor

BACKENDS = (("web", 18081), ("api", 18082), ("blog", 18083))  # the targetPorts in examples/demo/10-services.yaml
TRY = (
    ("demo.localhost", "/", "web"),
    ("demo.localhost", "/api/items?page=2", "api"),
    ("demo.localhost", "/about", "web (Exact /about)"),
    ("news.blog.localhost", "/", "blog (wildcard *.blog.localhost)"),
    ("anything.example", "/", "web (catch-all default backend)"),
)


def examples_dir() -> Path:
    """examples/demo of this checkout (the demo runs from the repository, as `make demo` does)."""
    return Path(__file__).resolve().parents[2] / "examples" / "demo"


def run_demo(settings: Settings) -> int:
    directory = examples_dir()
    if not directory.is_dir():
        raise ConfigError([f"the demo manifests are not at {directory}: run the demo from a checkout"])
    settings = msgspec.structs.replace(settings, manifests_dir=str(directory))
    with contextlib.ExitStack() as stack:
        for name, port in BACKENDS:
            try:
                stack.enter_context(start_echo(name, port=port))
            except EchoStartError as exc:
                raise ConfigError([f"cannot start the {name} demo backend on port {port}: {exc}"]) from exc
        shown = str(settings.http_port or "<http port above>")
        print("fastingress demo: try", flush=True)
        for host, path, what in TRY:
            print(f"  curl -H 'Host: {host}' http://127.0.0.1:{shown}{path}    # -> {what}", flush=True)
        https = str(settings.https_port or "<https port above>")
        print(f"  curl -k --resolve demo.localhost:{https}:127.0.0.1 https://demo.localhost:{https}/    "
              "# -> web over HTTPS (no Secret here: the self-signed default certificate, hence -k)", flush=True)
        print(f"  fastingress explain --manifests {directory} http://demo.localhost/api/x", flush=True)
        print("Ctrl-C stops the proxy and the demo backends.", flush=True)
        return run_supervisor(settings)
