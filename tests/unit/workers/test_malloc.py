"""workers/malloc.py: with the fixed thresholds, uvloop's 256 KiB TLS read costs no page faults.

Each case runs in a fresh interpreter, because glibc's malloc state is per process and depends on
its history. In a fresh interpreter without the tuning, the same loop costs 2 page faults per read.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.certs import make_cert
from workers.malloc import tune_malloc

READS = 2000
PROBE = """
import resource, ssl, sys
from workers.malloc import tune_malloc
assert tune_malloc()
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(sys.argv[1], sys.argv[2])
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_ctx.check_hostname = False
client_ctx.verify_mode = ssl.CERT_NONE
s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
client = client_ctx.wrap_bio(c_in, c_out, server_hostname="probe.example")
for _ in range(10):
    for end in (client, server):
        try:
            end.do_handshake()
        except ssl.SSLWantReadError:
            pass
    s_in.write(c_out.read())
    c_in.write(s_out.read())

def read_requests(n):
    for _ in range(n):
        client.write(b"GET / HTTP/1.1" + b"x" * 86)
        s_in.write(c_out.read())
        assert len(server.read(262144)) == 100  # what uvloop's SSLProtocol asks for on every read

read_requests(100)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
read_requests(int(sys.argv[3]))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / int(sys.argv[3]))
"""


@pytest.mark.skipif(not tune_malloc(), reason="no glibc mallopt here")
def test_a_tls_read_of_256_kib_costs_no_page_fault(tmp_path: Path) -> None:
    cert, key = make_cert(["probe.example"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), str(READS)],
                          capture_output=True, text=True, timeout=60, cwd=root, check=True)
    faults_per_read = float(done.stdout)
    assert faults_per_read < 0.05  # untuned: 2.0 (mmap, then mremap on shrink) on every read
