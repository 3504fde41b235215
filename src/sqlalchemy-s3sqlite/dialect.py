"""``sqlalchemy-s3sqlite.dialect.S3SQLiteDialect``: lambdalite's ``s3sqlite://`` dialect."""

from lambdalite.contrib.sqlalchemy import S3SQLiteDialect

__all__ = ["S3SQLiteDialect"]
