"""`upload`: keep-alive POSTs of 64 KiB bodies over 64 connections (request streaming)."""

from loadtest.harness import Load
from loadtest.scenario import Scenario

_SCRIPT = """
wrk.method = "POST"
wrk.body = string.rep("u", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
"""

SCENARIO = Scenario("upload", "keep-alive POST, 64 KiB request bodies, ~3 B responses, 64 connections",
                    load=Load(script=_SCRIPT))
