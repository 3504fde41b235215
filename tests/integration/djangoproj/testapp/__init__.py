"""Models for the backend tests."""
