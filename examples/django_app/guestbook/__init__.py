"""The guestbook app: entries and a visit counter."""
