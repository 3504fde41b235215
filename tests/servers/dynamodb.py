"""Test server fixture (dynamodb): filled in by its owner."""
