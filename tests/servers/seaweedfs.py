"""Test server fixture (seaweedfs): filled in by its owner."""
