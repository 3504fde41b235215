"""Framework adapters: Django (``contrib.django``) and SQLAlchemy; the core never imports them."""
