"""Contract tests: one body of tests run against every backend."""
