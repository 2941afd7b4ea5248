"""Sources: the I/O with the outside world that produces `Change`s, and nothing else.

Every input (the Kubernetes API, a manifests directory) sits behind the one small `Source` contract in
`fastingress.sources.base`. Sources read and convert; they never compile, publish or touch the route
table (import-linter enforces it).
"""
