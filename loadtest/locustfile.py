"""Locust scenarios for load-testing a fastingress installation with realistic, mixed traffic.

Responsibility: drive HTTP/1.1 traffic through a running fastingress (yours, or `fastingress demo`)
the way a mix of clients would, and count every response that is not 2xx as a failure (a 404 means
a host or path that no Ingress routes). It does not start or configure anything: `--host` is the
proxy's address, and each request names its virtual host in the Host header, as a DNS name pointing
at the proxy would.

Users (weights 3:2:1):
  BrowsingUser  a page view on one of the hosts: GET a page, then 1-3 of its static assets.
  ApiUser       JSON API calls: GET the collection, POST an item, GET, PUT and DELETE it.
  UploadUser    POST a body of 64 KiB to 1 MiB (random bytes, application/octet-stream).
Every user waits a think time between iterations. Requests are named "<user> <host><path>"
(item ids replaced by "[id]"), which gives the rows of locust's statistics.

Environment (comma-separated lists; the defaults fit `fastingress demo`, examples/demo):
  FASTINGRESS_LOCUST_HOSTS        virtual hosts to browse  [demo.localhost,news.blog.localhost,anything.example]
  FASTINGRESS_LOCUST_PAGES        page paths               [/,/about,/articles/2024/hello]
  FASTINGRESS_LOCUST_ASSETS       static asset paths       [/static/app.css,/static/app.js,/static/logo.png]
  FASTINGRESS_LOCUST_API_HOST     Host of the API          [the first of the hosts]
  FASTINGRESS_LOCUST_API_PATH     the API collection       [/api/items]; items are PATH/<id>
  FASTINGRESS_LOCUST_UPLOAD_HOST  Host of the upload path  [the first of the hosts]
  FASTINGRESS_LOCUST_UPLOAD_PATH  where uploads are POSTed [/upload]
  FASTINGRESS_LOCUST_THINK_TIME   think time MIN,MAX in s  [1,3]; 0,0 sends as fast as the users can

Run (the web UI on http://127.0.0.1:8089, or headless):
  locust -f loadtest/locustfile.py --host http://127.0.0.1:8080
  locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 2m --csv out/run
Pick user classes by name after the options: `... -t 1m UploadUser`.
"""

from __future__ import annotations

import os
import random
import re
import uuid
from typing import Any

from locust import HttpUser, between, task

MIN_UPLOAD_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 1024 * 1024
_URL = re.compile(r" with url: \S+")
_UPLOAD_DATA = os.urandom(MAX_UPLOAD_BYTES)  # sliced per request: random bytes, so nothing compresses them


def _list(name: str, default: str) -> list[str]:
    items = [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]
    if not items:
        raise ValueError(f"{name} is empty")
    return items


def _think_time() -> tuple[float, float]:
    values = [float(x) for x in _list("FASTINGRESS_LOCUST_THINK_TIME", "1,3")]
    if len(values) != 2 or not 0 <= values[0] <= values[1]:
        raise ValueError("FASTINGRESS_LOCUST_THINK_TIME must be MIN,MAX seconds with 0 <= MIN <= MAX")
    return values[0], values[1]


HOSTS = _list("FASTINGRESS_LOCUST_HOSTS", "demo.localhost,news.blog.localhost,anything.example")
PAGES = _list("FASTINGRESS_LOCUST_PAGES", "/,/about,/articles/2024/hello")
ASSETS = _list("FASTINGRESS_LOCUST_ASSETS", "/static/app.css,/static/app.js,/static/logo.png")
API_HOST = os.environ.get("FASTINGRESS_LOCUST_API_HOST") or HOSTS[0]
API_PATH = os.environ.get("FASTINGRESS_LOCUST_API_PATH", "/api/items").rstrip("/")
UPLOAD_HOST = os.environ.get("FASTINGRESS_LOCUST_UPLOAD_HOST") or HOSTS[0]
UPLOAD_PATH = os.environ.get("FASTINGRESS_LOCUST_UPLOAD_PATH", "/upload")
THINK_TIME = _think_time()


class _ProxyUser(HttpUser):
    """A user whose every request carries a Host header and must be answered 2xx."""

    abstract = True
    wait_time = between(*THINK_TIME)
    kind = ""

    def call(self, method: str, host: str, path: str, name: str | None = None,
             headers: dict[str, str] | None = None, **kwargs: Any) -> None:
        """One request, named "<kind> <host><name or path>" in the statistics; any status but 2xx fails."""
        with self.client.request(method, path, headers={"Host": host, **(headers or {})},
                                 name=f"{self.kind} {host}{name or path}", catch_response=True,
                                 **kwargs) as response:
            if 200 <= response.status_code < 300:
                response.success()
            elif response.status_code == 0:
                # without the URL (it holds item ids), so that one error is one row of the error report
                response.failure("no response: " + _URL.sub("", str(response.error)))
            else:
                response.failure(f"HTTP {response.status_code} {response.reason}")  # one error row per status


class BrowsingUser(_ProxyUser):
    weight = 3
    kind = "browse"

    @task
    def view_page(self) -> None:
        host = random.choice(HOSTS)
        self.call("GET", host, random.choice(PAGES))
        for asset in random.sample(ASSETS, random.randint(1, min(3, len(ASSETS)))):
            self.call("GET", host, asset)


class ApiUser(_ProxyUser):
    weight = 2
    kind = "api"

    @task
    def item_lifecycle(self) -> None:
        item_id = uuid.uuid4().hex
        item = f"{API_PATH}/{item_id}"
        named = f"{API_PATH}/[id]"
        self.call("GET", API_HOST, f"{API_PATH}?page={random.randint(1, 5)}", name=f"{API_PATH}?page=[n]")
        self.call("POST", API_HOST, API_PATH, json={"id": item_id, "name": "widget", "price": random.randint(1, 999)})
        self.call("GET", API_HOST, item, name=named)
        self.call("PUT", API_HOST, item, name=named, json={"id": item_id, "name": "widget", "price": 1})
        self.call("DELETE", API_HOST, item, name=named)


class UploadUser(_ProxyUser):
    weight = 1
    kind = "upload"

    @task
    def upload(self) -> None:
        size = random.randint(MIN_UPLOAD_BYTES, MAX_UPLOAD_BYTES)
        self.call("POST", UPLOAD_HOST, UPLOAD_PATH, data=_UPLOAD_DATA[:size],
                  headers={"Content-Type": "application/octet-stream"})
