"""`small-unique`: `small` against a backend whose every response head is unique (an `X-Response-Id`).

fastingress remembers the plain response heads it has checked (ClientConn `heads`); a fixed-response
backend repeats its head until its Date changes, so in `small` nearly every head is remembered. Here
none is: the figure for backends whose heads never repeat, and the cost of looking them up in vain.
"""

from loadtest.scenario import Scenario

SCENARIO = Scenario("small-unique", "keep-alive GET, ~100 B responses, every response head unique, 64 connections",
                    body_bytes=100, unique_heads=True)
