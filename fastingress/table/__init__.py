"""The route table: the contract (ABI) between the supervisor and the workers.

`schema` fixes the segment layout, `normalize` the request host/path canonical forms both sides agree
on, `shm` the shared-memory writer (supervisor) and reader (workers), `lookup` the pure lookups the
workers call per request. This package imports only numpy, the standard library and
`fastingress.errors`: it is loaded by both sides and must stay small and stable.
"""
