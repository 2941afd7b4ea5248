"""Thin asyncio adapters around the HTTP/1.1 cores: downstream and upstream Protocols, pools, exchanges."""
