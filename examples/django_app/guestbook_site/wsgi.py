"""WSGI entry point (runserver, gunicorn, and the Lambda handler in lambda_function.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guestbook_site.settings")
application = get_wsgi_application()
