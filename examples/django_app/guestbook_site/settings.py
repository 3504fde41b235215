"""Settings of the guestbook example.

The database lives in a lambdalite remote: by default a local folder (the embedded default) in
the system temporary directory, so that ``manage.py migrate && manage.py runserver`` works with
nothing else installed. On Lambda, point ``GUESTBOOK_DB`` at S3 (``s3://my-bucket/guestbook``).

Environment variables (none is needed locally):

* ``GUESTBOOK_DB``: the database's NAME: a remote URL, or the absolute path of a database file
  on EFS (shared-file mode, then also set ``SQLITE_LOCK_DYNAMODB_TABLE``);
* ``GUESTBOOK_CACHE_DIR``: the instance's cache dir (default: lambdalite's, in the temporary
  directory); give each simulated instance its own;
* ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS`` (comma separated).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "lambdalite.contrib.django",  # optional: lambdalite_status, lambdalite_vacuum, checks
    "guestbook",
]
MIDDLEWARE = [
    # first: one freshness check per request, read-your-writes across instances, and a request
    # re-run when another instance committed between what it read and what it wrote
    "lambdalite.contrib.django.middleware.LambdaliteMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "guestbook_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "guestbook_site.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "lambdalite.contrib.django",
        "NAME": os.environ.get("GUESTBOOK_DB")
        or Path(tempfile.gettempdir(), "lambdalite-guestbook", "remote").as_uri(),
        "OPTIONS": {
            "cache_dir": os.environ.get("GUESTBOOK_CACHE_DIR") or None,  # None: the default
        },
        # One transaction per request: one write lease and one publish per write request.
        "ATOMIC_REQUESTS": True,
        # Safe with lambdalite: every commit is published when it returns, not at close().
        "CONN_MAX_AGE": None,
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
