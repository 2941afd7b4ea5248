"""End-to-end tests: `fastingress serve` (supervisor + workers) against the test Kubernetes API server."""
