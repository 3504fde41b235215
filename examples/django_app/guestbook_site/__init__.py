"""The guestbook example project (settings, URLs, WSGI)."""
