"""`many-routes`: 1,000 hosts x 10 Prefix paths; requests spread over all 10,000 routes."""

from loadtest import configs
from loadtest.harness import Load
from loadtest.scenario import Scenario

HOSTS, PATHS = 1000, 10
# a stride through hosts and paths that visits every route, with a fresh Host and path per request
_SCRIPT = f"""
local i = 0
request = function()
  i = i + 1
  local host = "h" .. ((i * 7919) % {HOSTS}) .. ".bench.example"
  local path = "/p" .. (i % {PATHS}) .. "/item"
  return wrk.format("GET", path, {{["Host"] = host}})
end
"""

SCENARIO = Scenario("many-routes", f"keep-alive GET spread over {HOSTS:,} hosts x {PATHS} paths, 64 connections",
                    load=Load(script=_SCRIPT), manifests=lambda port: configs.many_routes_manifests(HOSTS, PATHS, port))
