"""`tls-keepalive`: HTTPS keep-alive GETs of ~100-byte responses over 64 connections (`small` over TLS).

One handshake per connection, then requests on it: this measures TLS record encryption and the
proxying, not handshakes (tls-handshake does those). SNI and Host name the route's host.
"""

from loadtest import configs
from loadtest.harness import Load
from loadtest.scenario import Scenario

SCENARIO = Scenario("tls-keepalive", "HTTPS keep-alive GET, ~100 B responses, 64 connections", body_bytes=100,
                    load=Load(https_host=configs.TLS_HOST), manifests=configs.tls_manifests)
