"""loadtest/locustfile.py runs clean against the demo: a 10-second headless locust through `fastingress serve`.

The demo topology (examples/demo, with the echo backends on free ports instead of 18081-18083) behind
the real proxy; locust runs as its own process, as a user would run it, with the Host-header
variables pointing at the demo hosts. Its CSV statistics must show requests, no failure at all, and
requests from every user class (their request names start with the class's kind).
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastingress.demo.echo import start_echo
from fastingress.demo.run import BACKENDS, examples_dir
from tests.integration.conftest import start_proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
HOSTS = "demo.localhost,news.blog.localhost,anything.example"  # web + api, blog (wildcard), web (catch-all)
KINDS = ("browse", "api", "upload")  # BrowsingUser, ApiUser, UploadUser


def demo_manifests(directory: Path, ports: dict[str, int]) -> None:
    """examples/demo copied into `directory`, each Service's targetPort replaced by its echo backend's port."""
    for source in sorted(examples_dir().glob("*.yaml")):
        text = source.read_text()
        for name, demo_port in BACKENDS:
            text = text.replace(f"targetPort: {demo_port}\n", f"targetPort: {ports[name]}\n")
        (directory / source.name).write_text(text)
    services = (directory / "10-services.yaml").read_text()
    assert all(f"targetPort: {port}\n" in services for port in ports.values()), services


def run_locust(port: int, csv_prefix: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FASTINGRESS_LOCUST_HOSTS": HOSTS, "FASTINGRESS_LOCUST_API_HOST": "demo.localhost",
           "FASTINGRESS_LOCUST_UPLOAD_HOST": "demo.localhost", "FASTINGRESS_LOCUST_THINK_TIME": "0.1,0.5"}
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "5", "-r", "5",
               "-t", "10s", "--host", f"http://127.0.0.1:{port}", "--csv", str(csv_prefix), "--only-summary"]
    # subprocess.run kills locust if it overruns (it stops by itself after -t plus a second or two)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=40)


@pytest.mark.timeout(60)
def test_locust_scenarios_run_clean_through_the_demo(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    with contextlib.ExitStack() as stack:
        echoes = {name: stack.enter_context(start_echo(name)) for name, _ in BACKENDS}
        demo_manifests(manifests, {name: echo.port for name, echo in echoes.items()})
        proxy = stack.enter_context(start_proxy(manifests, workers=2))
        result = run_locust(proxy.http_port, tmp_path / "smoke")
    output = f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    failures = tmp_path / "smoke_failures.csv"
    assert (tmp_path / "smoke_stats.csv").exists(), output
    with open(tmp_path / "smoke_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))  # one row per (method, name), then "Aggregated"
    [total] = [row for row in rows if row["Name"] == "Aggregated"]
    failure_detail = failures.read_text() if failures.exists() else ""
    assert int(total["Request Count"]) > 0, output
    assert int(total["Failure Count"]) == 0, failure_detail + output
    for kind in KINDS:
        made = sum(int(row["Request Count"]) for row in rows if row["Name"].startswith(f"{kind} "))
        assert made > 0, f"no {kind} requests in {[(row['Type'], row['Name']) for row in rows]}"
    api_methods = {row["Type"] for row in rows if row["Name"].startswith("api ")}
    assert api_methods == {"GET", "POST", "PUT", "DELETE"}, api_methods
    assert result.returncode == 0, output
