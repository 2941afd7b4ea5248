"""`1m`: keep-alive GETs of 1 MiB responses over 16 connections (streaming, backpressure)."""

from loadtest.harness import Load
from loadtest.scenario import Scenario

SCENARIO = Scenario("1m", "keep-alive GET, 1 MiB responses, 16 connections", body_bytes=1024 * 1024,
                    load=Load(connections=16))
