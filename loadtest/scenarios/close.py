"""`close`: a new client connection per request (accept, short exchange, close), 64 connections."""

from loadtest.harness import Load
from loadtest.scenario import Scenario

SCENARIO = Scenario("close", "GET with Connection: close, ~100 B responses, 64 connections",
                    load=Load(headers=("Connection: close",)))
