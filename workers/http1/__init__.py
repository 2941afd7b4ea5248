"""Sans-IO HTTP/1.1 cores around httptools (llhttp): bytes in, events and bytes out.

No asyncio, sockets, ssl, clocks or logging here: the adapters in `workers.proxy` do I/O, read the
clock and log. Errors are `RemoteProtocolError` (the peer broke the protocol; carries the status to
answer) or `LocalProtocolError` (we did; a bug). An error is final for the connection.
"""
