"""A tiny Django project for the backend tests (settings from environment variables)."""
