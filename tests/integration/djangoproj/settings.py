"""Settings of the backend tests' Django project.

``LL_DJANGO_NAME`` is the default database's NAME (a remote URL or an absolute path),
``LL_DJANGO_CACHE`` its cache dir (one per simulated instance) and ``LL_DJANGO_OPTIONS`` extra
OPTIONS as JSON. ``LL_DJANGO_ENGINE`` picks the ENGINE (default: lambdalite's).
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "lambdalite-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integration.djangoproj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "lambdalite.contrib.django",
    "tests.integration.djangoproj.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only


def database(name: str, cache_dir: str, **options: object) -> dict[str, object]:
    return {
        "ENGINE": os.environ.get("LL_DJANGO_ENGINE", "lambdalite.contrib.django"),
        "NAME": name,
        "OPTIONS": {"cache_dir": cache_dir, **options},
    }


DATABASES = {}
if "LL_DJANGO_NAME" in os.environ:
    DATABASES["default"] = database(
        os.environ["LL_DJANGO_NAME"],
        os.environ["LL_DJANGO_CACHE"],
        **json.loads(os.environ.get("LL_DJANGO_OPTIONS", "{}")),
    )
