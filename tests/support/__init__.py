"""Helpers shared by the test suites (certificate generation, manifest builders)."""
