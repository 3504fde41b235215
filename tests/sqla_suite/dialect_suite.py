"""SQLAlchemy's dialect compliance suite, run against the URL given to scripts/sqla-suite."""

from sqlalchemy.testing.suite import *  # noqa: F403
