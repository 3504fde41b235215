"""``ENGINE = "lambdalite.contrib.django.s3sqlite"``: the drop-in for ``django_s3_sqlite`` and
Zappa's ``zappa_django_utils.db.backends.s3sqlite``.

The same settings: ``NAME`` is the object key (``"db.sqlite3"``, a ``Path`` too), ``BUCKET`` the
bucket (required), ``SIGNATURE_VERSION`` is accepted. It is replica mode on
``s3://BUCKET/NAME``: a prefix holding lambdalite's manifest, snapshots and deltas, not the
single object the old tools wrote; import that one once with ``lambdalite import`` (see
``docs/django.md``). ``AWS_S3_ACCESS_KEY``/``AWS_S3_ACCESS_SECRET`` are refused: credentials come
from boto3's default chain.
"""
