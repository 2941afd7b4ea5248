"""The demo: what `fastingress demo` and the integration tests run behind the proxy.

`fastingress.demo.echo` is the echo backend (a small aiohttp service started as a subprocess);
`examples/demo/` holds the manifests that route to it. Nothing here is imported by the control
plane or the workers, and this package deliberately re-exports nothing: importing it must stay
free, so that `python -m fastingress.demo.echo` does not load the module twice.
"""
