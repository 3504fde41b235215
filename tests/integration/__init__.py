"""Integration tests: frameworks and servers."""
