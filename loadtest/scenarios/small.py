"""`small`: keep-alive GETs of ~100-byte responses over 64 connections; the naive aiohttp proxy too."""

from loadtest.scenario import Scenario

SCENARIO = Scenario("small", "keep-alive GET, ~100 B responses, 64 connections", body_bytes=100,
                    servers=("fastingress", "nginx", "haproxy", "aiohttp"))
