"""`16k`: keep-alive GETs of 16 KiB responses over 64 connections; the naive aiohttp proxy too."""

from loadtest.scenario import Scenario

SCENARIO = Scenario("16k", "keep-alive GET, 16 KiB responses, 64 connections", body_bytes=16 * 1024,
                    servers=("fastingress", "nginx", "haproxy", "aiohttp"))
