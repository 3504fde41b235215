"""Functions run in spawned processes for the SQLAlchemy tests: each one simulated instance."""

from __future__ import annotations

from sqlalchemy import Integer, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import lambdalite


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


def orm_increment(url: str, times: int) -> int:
    """``times`` ORM read-modify-write increments, each retried on conflict; return the retries."""
    engine = create_engine(url)
    session_factory = sessionmaker(engine)
    calls = 0

    @lambdalite.retry_on_conflict(attempts=100)
    def increment() -> None:
        nonlocal calls
        calls += 1
        with session_factory.begin() as session:
            counter = session.get(Counter, 1)
            assert counter is not None
            counter.n += 1

    for _ in range(times):
        increment()
    engine.dispose()
    return calls - times
