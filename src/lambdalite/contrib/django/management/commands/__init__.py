"""``lambdalite_status``, ``lambdalite_vacuum`` and the old tools' ``s3_sqlite_vacuum``."""
