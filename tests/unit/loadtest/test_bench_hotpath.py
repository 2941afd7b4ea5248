"""bench_hotpath drives the real protocols: plain, through uvloop's SSLProtocol, and the trivial app."""

from __future__ import annotations

import pytest

from loadtest import bench_hotpath


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("app", ["proxy", "trivial"])
def test_each_mode_serves_every_request_on_one_connection(tls: bool, app: str) -> None:
    # run() asserts that the client connection stayed open and the upstream went back to the pool
    assert bench_hotpath.run(500, tls=tls, app=app) > 0


def test_tls_requests_reach_the_proxy_decrypted(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    monkeypatch.setattr(bench_hotpath.TrivialApp, "data_received",
                        lambda self, data: (seen.append(data), self.transport.write(bench_hotpath.RESPONSE)))
    bench_hotpath.run(50, tls=True, app="trivial")
    assert seen and set(seen) == {bench_hotpath.REQUEST}


def test_encrypt_only_measures_nothing() -> None:
    assert bench_hotpath.run(50, tls=True, encrypt_only=True) == 0.0
