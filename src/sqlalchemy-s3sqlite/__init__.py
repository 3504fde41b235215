"""Compatibility shim: sqlalchemy-s3sqlite's ``registry.register`` line, served by lambdalite.

sqlalchemy-s3sqlite told its users to run::

    registry.register("s3sqlite", "sqlalchemy-s3sqlite.dialect", "S3SQLiteDialect")

SQLAlchemy's registry takes precedence over entry points and imports that module path with
``__import__``, which accepts the hyphenated name. This package keeps the line working (and
harmless) after ``pip uninstall sqlalchemy-s3sqlite && pip install lambdalite[sqlalchemy]``: it
resolves to :class:`lambdalite.contrib.sqlalchemy.S3SQLiteDialect`, the same class that the
``s3sqlite`` entry point gives. The line is no longer needed; see docs/sqlalchemy.md.
"""
