"""Helpers for tests, benchmarks and scripts: real servers on loopback, fakes."""
