"""``ENGINE = "lambdalite.contrib.django.efs"``: the drop-in for ``django_sqlite_efs``.

The same settings as django-sqlite-efs: ``NAME`` is the absolute path of the database file on
EFS, the lock table comes from ``SQLITE_LOCK_DYNAMODB_TABLE`` (required), ``SQLITE_LOCK_EXPIRATION``
and ``SQLITE_LOCK_MAX_ATTEMPTS`` from Django's settings or the environment, and
``OPTIONS["timeout"]`` is the lock wait (default and minimum 3 s). It is shared-file mode with a
DynamoDB lock; ``ENGINE = "lambdalite.contrib.django"`` reads the same settings and is less strict.
"""
