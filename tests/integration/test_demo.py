"""`make demo` as the README promises: it starts, answers a request through the proxy, stops on SIGINT."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_serves_and_stops_on_sigint() -> None:
    env = {**os.environ, "FASTINGRESS_HTTP_PORT": "0", "FASTINGRESS_HTTPS_PORT": "0",
           "FASTINGRESS_ADMIN_PORT": "0", "FASTINGRESS_WORKERS": "1"}
    # its own process group: the SIGINT reaches make and fastingress, as Ctrl-C on a terminal does
    proc = subprocess.Popen(["make", "-s", "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        port = https_port = 0
        deadline = time.monotonic() + 60
        lines = []
        while not (port and https_port) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"\bhttp on [0-9.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
            match = re.search(r"https on [0-9.]+:(\d+)", line)
            if match:
                https_port = int(match.group(1))
        assert port and https_port, "".join(lines)
        assert any("curl -H 'Host: demo.localhost'" in line for line in lines)
        body = b""
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/items", headers={"Host": "demo.localhost"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    body = resp.read()
                    break
            except OSError:
                time.sleep(0.1)
        assert b'"backend":"api"' in body
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the self-signed default certificate
        req = urllib.request.Request(f"https://127.0.0.1:{https_port}/", headers={"Host": "demo.localhost"})
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            assert b'"backend":"web"' in resp.read()  # HTTPS routes by Host like HTTP
        os.killpg(proc.pid, signal.SIGINT)
        # make itself dies of the SIGINT (as on a terminal); what matters is that everything under it stopped
        assert proc.wait(timeout=40) in (0, 2, -signal.SIGINT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    pattern = "fastingress.demo.echo --name (web|api|blog) --host 127.0.0.1 --port 1808|fastingress demo"
    while time.monotonic() < deadline:
        leftovers = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        if not leftovers:
            break
        time.sleep(0.1)
    assert leftovers == [], "the demo left processes running"
