"""The DynamoDB lock: one item per lock in a table whose partition key is ``pk`` (string).

The item, compatible with django-sqlite-efs (same table, same ``pk``/``lock_id``/
``expires_at``; both tools exclude each other on the same key)::

    pk          S   the lock key, e.g. "database#/mnt/efs/app.db" or "s3://bucket/prefix#lock"
    lock_id     S   the owner's id; absent while the lock is free
    expires_at  N   POSIX seconds; usable as the table's TTL attribute; 0 once released
    generation  N   bumped on every grant (hand-overs included); never goes down
    queue       L   the waiters, first come first: maps {owner: S, since: N}
    released    N   the generation the last release ended (cleared by the next take)

Every change is one conditional ``UpdateItem`` (``:now`` is the caller's clock; TTL
deletion is lazy, so conditions always compare ``expires_at`` themselves). A write that
loses its condition asks for ``ReturnValuesOnConditionCheckFailure=ALL_OLD``, and one
that wins for ``ALL_NEW``, so every answer shows the lock as it is: the lock remembers
the last item it saw and bases its next write on it.

* **Take, blind** (the first look of an acquire): ``SET lock_id = :me, expires_at = :exp,
  generation = if_not_exists(generation, :floor) + :one REMOVE released`` if the lock is
  free, expired or ours (``lock_id = :me``: a retry after an answer that never came back
  succeeds instead of locking itself out until expiry) *and the queue is empty*.
  Uncontended, that is the whole acquire: one write, no read.
* **Wait**: a waiter appends itself to ``queue`` (``list_append``) with one write (on any
  existing item: a join conditioned on "held" could lose every time to a holder that
  releases and takes again between our look and our write), then polls with strongly consistent
  ``GetItem`` calls, refreshing its entry (``SET queue[i].since``) once it is older than
  half the expiration; entries older than the expiration are stale (a waiter that died)
  and are skipped and removed by the next take or release.
* **Take, in turn**: a free or expired lock whose first live waiter is us: the take
  above, plus ``REMOVE`` of our entry and the stale ones ahead of it, conditioned on
  those entries being what we read.
* **Release**: hand over to the first live waiter: ``SET lock_id = :next, expires_at =
  :exp, generation = generation + :one, released = :gen REMOVE queue[0..i]``, or with
  nobody waiting free it: ``REMOVE lock_id SET expires_at = :zero, released = :gen``;
  conditioned on ``lock_id = :me AND generation = :gen`` and on the queue entries it
  removes. The next holder takes a handed-over lock without a write of its own: it sees
  itself as ``lock_id`` at its next poll. ``expires_at = 0`` is more than five years in
  the past, which DynamoDB's TTL never deletes, so the generation survives; when an item
  is gone anyway (TTL after a crash, a django-sqlite-efs ``PutItem``), the generation
  restarts from the clock in milliseconds (:func:`~lambdalite.locks.base.first_generation`).
* **Renew**: ``SET expires_at = :exp`` if ``lock_id = :me AND generation = :gen AND
  expires_at >= :now``.

Requests: uncontended, one write to take and one to release (as django-sqlite-efs: its
``PutItem`` and ``DeleteItem``). A waiter adds one write to join the queue and its polls;
an instance that just handed the lock over expects contention and joins the queue at
once instead of trying a blind take first.

django-sqlite-efs compatibility: it conditions on ``expires_at < now`` only, so it sees a
held (or handed-over) lock as held and a released one (``expires_at = 0``) as free; it
replaces or deletes the whole item, queue included, and our waiters then join again.

IAM: ``dynamodb:GetItem`` and ``dynamodb:UpdateItem`` on the table; ``lambdalite lock
init-table`` also needs ``dynamodb:CreateTable``, ``dynamodb:DescribeTable``,
``dynamodb:DescribeTimeToLive`` and ``dynamodb:UpdateTimeToLive``.

The boto3 client is created at first use (short timeouts, two tries), with the region and
endpoint given or boto3's default chain (``AWS_REGION``, ``AWS_ENDPOINT_URL_DYNAMODB``...).
SDK errors become lock errors in one function, :func:`translate_error`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from lambdalite.errors import ConfigurationError, LockError
from lambdalite.locks._record import Record, Waiter
from lambdalite.locks.base import Busy, Lease, LeaseLock, TransientLockError, first_generation

__all__ = ["DynamoDBLock", "init_table", "make_client", "translate_error"]

logger = logging.getLogger("lambdalite.locks.dynamodb")

TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
KEY_SCHEMA = "partition key `pk` of type string (S) and no sort key"
IAM_LOCK = ("dynamodb:GetItem", "dynamodb:UpdateItem")
IAM_INIT = (
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:UpdateTimeToLive",
)
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "LimitExceededException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
    }
)

#: Attribute names of the queue, always passed as expression attribute names.
_NAMES = {"#q": "queue", "#o": "owner", "#t": "since", "#rel": "released"}
_TOKEN = re.compile(r"[#:]\w+")
_MAX_REMOVE = 64  # list elements one write removes at most (expressions are bounded)
_FRESH = 1.0  # seconds a remembered item predicts contention for

_TAKE = (
    "SET lock_id = :me, expires_at = :exp, "
    "generation = if_not_exists(generation, :floor) + :one REMOVE #rel"
)
_FREE_OR_OURS = "(attribute_not_exists(lock_id) OR expires_at < :now OR lock_id = :me)"
_NO_QUEUE = "(attribute_not_exists(#q) OR size(#q) = :zero)"


def check_table_name(table: str) -> str:
    if not TABLE_NAME.fullmatch(table):
        raise ConfigurationError(
            f"invalid DynamoDB table name {table!r}: 3-255 of A-Z a-z 0-9 _ . -", key="lock"
        )
    return table


def translate_error(exc: Exception, *, table: str, action: str, init: bool = False) -> LockError:
    """The one place where boto3/botocore errors become lock errors.

    Throttling, 5xx, timeouts and connection failures give :class:`TransientLockError`
    (the acquire loop retries them); everything else a :class:`LockError` saying what to
    do: create the table, fix its key schema, grant IAM actions, configure credentials.
    """
    from botocore.exceptions import (  # imported lazily: boto3 is slow to import
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    prefix = f"DynamoDB lock table {table}: cannot {action}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "ResourceNotFoundException":
            return LockError(
                f"{prefix}: table {table} does not exist; create it with "
                f"`lambdalite lock init-table dynamodb://{table}`"
            )
        if code == "ValidationException" and re.search(r"\bkey", message, re.IGNORECASE):
            return LockError(
                f"{prefix}: the table's key schema is wrong ({message}); a lambdalite lock "
                f"table needs a {KEY_SCHEMA}"
            )
        if code in _CREDENTIAL_CODES:
            needed = ", ".join(IAM_LOCK + IAM_INIT if init else IAM_LOCK)
            return LockError(
                f"{prefix}: access refused ({code}: {message}); the credentials in use need "
                f"the IAM actions {needed} on table {table}"
            )
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientLockError(f"{prefix}: {code or status}: {message} (retryable)")
        return LockError(f"{prefix}: {code}: {message}")
    if isinstance(
        exc,
        ConnectTimeoutError | ReadTimeoutError | EndpointConnectionError | ConnectionClosedError,
    ):
        return TransientLockError(f"{prefix}: {exc} (retryable)")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return LockError(
            f"{prefix}: no AWS credentials found ({exc}); on Lambda the function's role "
            "provides them, elsewhere configure boto3's default chain"
        )
    if isinstance(exc, NoRegionError):
        return LockError(
            f"{prefix}: no AWS region; set the region option or AWS_REGION / AWS_DEFAULT_REGION"
        )
    return LockError(f"{prefix}: {type(exc).__name__}: {exc}")


def make_client(
    endpoint_url: str | None = None, region: str | None = None, *, read_timeout: float = 2.0
) -> Any:
    """A DynamoDB client with short timeouts (1 s connect, 2 s read, 2 tries)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=1,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 2, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "dynamodb", endpoint_url=endpoint_url, region_name=region, config=config
    )


def _num(value: float | int) -> dict[str, str]:
    if isinstance(value, int):
        return {"N": str(value)}
    return {"N": f"{value:.3f}"}


def _lease_of(key: str, item: dict[str, Any] | None) -> Lease | None:
    """The lease an item describes (``None`` if there is no item or it is free)."""
    if not item or "lock_id" not in item:
        return None
    expires_at = float(item.get("expires_at", {}).get("N", "inf"))
    generation = int(float(item.get("generation", {}).get("N", "0")))
    return Lease(key, item["lock_id"]["S"], generation, expires_at, item["lock_id"]["S"])


def _waiter(entry: Any) -> Waiter:
    """A queue entry; one we cannot read counts as stale (it is skipped, and removed)."""
    try:
        fields = entry["M"]
        return Waiter(str(fields["owner"]["S"]), float(fields["since"]["N"]))
    except (KeyError, TypeError, ValueError):
        return Waiter("", float("-inf"))


def _record_of(item: dict[str, Any] | None) -> Record | None:
    """The lock an item describes, queue included (``None`` if there is no item)."""
    if not item:
        return None
    owner = item["lock_id"]["S"] if "lock_id" in item else None
    released = item.get("released", {}).get("N")
    return Record(
        owner,
        int(float(item.get("generation", {}).get("N", "0"))),
        float(item.get("expires_at", {}).get("N", "inf")),
        tuple(_waiter(entry) for entry in item.get("queue", {}).get("L", [])),
        int(float(released)) if released is not None else None,
    )


class _Write:
    """One ``UpdateItem`` being put together: its clauses, condition and values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.conditions: list[str] = []
        self.values: dict[str, dict[str, Any]] = {}

    def value(self, name: str, value: dict[str, Any]) -> str:
        self.values[name] = value
        return name

    def entry_is(self, index: int, waiter: Waiter, *, exactly: bool) -> None:
        """Condition: queue entry ``index`` is still ``waiter`` (``exactly``: not refreshed)."""
        owner = self.value(f":o{index}", {"S": waiter.owner})
        self.conditions.append(f"#q[{index}].#o = {owner}")
        if exactly:
            since = self.value(f":t{index}", _num(waiter.since))
            self.conditions.append(f"#q[{index}].#t = {since}")

    def params(self) -> dict[str, Any]:
        update = ""
        if self.sets:
            update += "SET " + ", ".join(self.sets)
        if self.removes:
            update += " REMOVE " + ", ".join(self.removes)
        condition = " AND ".join(self.conditions)
        used = set(_TOKEN.findall(update + " " + condition))
        params: dict[str, Any] = {
            "UpdateExpression": update.strip(),
            "ConditionExpression": condition,
        }
        names = {k: v for k, v in _NAMES.items() if k in used}
        if names:
            params["ExpressionAttributeNames"] = names
        values = {k: v for k, v in self.values.items() if k in used}
        if values:
            params["ExpressionAttributeValues"] = values
        return params


class DynamoDBLock(LeaseLock):
    """A lock on item ``pk = key`` in ``table``."""

    def __init__(
        self,
        table: str,
        key: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(key, **kwargs)
        self.table = check_table_name(table)
        self.endpoint_url = endpoint_url
        self.region = region
        self._client = client
        self.where = f"DynamoDB table {table}"
        self._view: Record | None = None  # the item as the last answer showed it
        self._view_at = float("-inf")  # when (monotonic); -inf: no answer yet
        self._looked = False  # this acquire looked at the lock before
        self._queued = False  # this acquire joined the queue

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = make_client(self.endpoint_url, self.region)
            except Exception as exc:
                raise translate_error(exc, table=self.table, action="connect") from exc
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def _call(self, operation: str, action: str, **params: Any) -> tuple[dict[str, Any], bool]:
        """(response, condition held): a failed condition is an answer, not an error."""
        from botocore.exceptions import ClientError

        params.setdefault("TableName", self.table)
        params.setdefault("Key", {"pk": {"S": self.key}})
        try:
            return getattr(self.client, operation)(**params), True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return dict(exc.response), False
            raise translate_error(exc, table=self.table, action=action) from exc
        except LockError:
            raise
        except Exception as exc:
            raise translate_error(exc, table=self.table, action=action) from exc

    def _seen(self, item: dict[str, Any] | None) -> Record | None:
        self._view = _record_of(item)
        self._view_at = time.monotonic()
        return self._view

    def _update(self, write: _Write, action: str) -> tuple[bool, Record | None]:
        """Send ``write``: (condition held, the item after it, or as it is if it lost)."""
        response, ok = self._call(
            "update_item",
            action,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
            **write.params(),
        )
        return ok, self._seen(response.get("Attributes" if ok else "Item"))

    def _get(self) -> Record | None:
        response, _ = self._call("get_item", "read the lock", ConsistentRead=True)
        return self._seen(response.get("Item"))

    def _lease(self, record: Record) -> Lease:
        assert record.owner is not None
        return Lease(self.key, record.owner, record.generation, record.expires_at, record.owner)

    def _holder(self, record: Record | None) -> Lease | None:
        return self._lease(record) if record is not None and record.owner is not None else None

    # -- acquire ---------------------------------------------------------------------------

    def _begin_acquire(self) -> None:
        self._looked = False
        self._queued = False

    def _contended(self, now: float) -> bool:
        """Did a recent answer show the lock held by another, or others waiting?"""
        view = self._view
        if view is None or time.monotonic() - self._view_at > _FRESH:
            return False
        if view.owner not in (None, self.owner) and view.held(now):
            return True
        return any(w.owner != self.owner for w in view.live(now, self.expiration))

    def _try_acquire(self, now: float) -> Lease | Busy:
        looked, self._looked = self._looked, True
        if looked:
            record = self._get()
        elif self._contended(now):
            _, record = self._join(None, now)  # expect to wait: join the queue at once
        else:
            ok, record = self._update(self._take_write(None, now), "take the lock")
            if ok and record is not None:
                return self._lease(record)
        # Decide on the item as the last answer showed it; each write's answer shows it
        # anew, so a lost race is decided again at once (a few rounds at most).
        for _ in range(3):
            if looked and record is not None and record.owner == self.owner and record.held(now):
                self._queued = False  # handed over to us (or our write whose answer was lost)
                return self._lease(record)
            if record is None or record.takeable_by(self.owner, now, self.expiration):
                write = (
                    self._regrant_write(record, now)
                    if record is not None and record.owner == self.owner
                    else self._take_write(record, now)
                )
                ok, record = self._update(write, "take the lock")
                if ok and record is not None:
                    self._queued = False
                    return self._lease(record)
            elif record.must_queue(self.owner, now, self.expiration):
                _, record = self._join(record, now)  # then: free with us first? take it
            else:
                break
        return self._busy(record, now) if record is not None else Busy(None)

    def _busy(self, record: Record, now: float) -> Busy:
        return Busy(self._holder(record), record.position(self.owner, now, self.expiration))

    def _take_write(self, record: Record | None, now: float) -> _Write:
        """Take a free or expired lock: blind (``record`` None: only if nobody waits), or in
        turn (remove our entry and the stale ones ahead, as read)."""
        write = _Write()
        write.sets.append(_TAKE[len("SET ") : _TAKE.index(" REMOVE")])
        write.removes.append("#rel")
        write.conditions.append(_FREE_OR_OURS)
        write.value(":me", {"S": self.owner})
        write.value(":exp", _num(now + self.expiration))
        write.value(":now", _num(now))
        write.value(":floor", _num(first_generation(now) - 1))
        write.value(":one", _num(1))
        queue = record.queue if record is not None else ()
        if not queue:
            write.conditions.append(_NO_QUEUE)
            write.value(":zero", _num(0))
            return write
        mine = next(
            (
                i
                for i, w in enumerate(queue)
                if w.owner == self.owner and w.live(now, self.expiration)
            ),
            None,
        )
        last = mine if mine is not None else len(queue) - 1
        for index in range(min(last + 1, _MAX_REMOVE)):
            write.removes.append(f"#q[{index}]")
            write.entry_is(index, queue[index], exactly=index != mine)
        if mine is None:  # nobody live waits: all of them go, and nobody may have joined
            write.conditions.append("size(#q) = :size")
            write.value(":size", _num(len(queue)))
        return write

    def _regrant_write(self, record: Record, now: float) -> _Write:
        """A lock held by us already: a new grant (generation and expiry), queue untouched."""
        write = _Write()
        write.sets += ["expires_at = :exp", "generation = generation + :one"]
        write.removes.append("#rel")
        write.conditions.append("lock_id = :me AND generation = :gen")
        write.value(":me", {"S": self.owner})
        write.value(":gen", _num(record.generation))
        write.value(":exp", _num(now + self.expiration))
        write.value(":one", _num(1))
        return write

    def _join(self, record: Record | None, now: float) -> tuple[bool, Record | None]:
        """Join the queue (or refresh our entry in place, and drop our duplicates)."""
        write = _Write()
        write.value(":me", {"S": self.owner})
        queue = record.queue if record is not None else ()
        mine = [i for i, w in enumerate(queue) if w.owner == self.owner]
        if mine:
            first, *extra = mine
            write.sets.append(f"#q[{first}].#t = :since")
            write.value(":since", _num(now))
            write.conditions.append(f"#q[{first}].#o = :me")
            for index in extra[:_MAX_REMOVE]:
                write.removes.append(f"#q[{index}]")
                write.conditions.append(f"#q[{index}].#o = :me")
            action = "refresh our place in the queue of the lock"
        else:
            write.sets.append("#q = list_append(if_not_exists(#q, :empty), :entry)")
            write.value(":empty", {"L": []})
            write.value(":entry", {"L": [{"M": {"owner": {"S": self.owner}, "since": _num(now)}}]})
            # Whatever the lock's state: a join that required "held" would lose every
            # time to a holder that releases and takes again between our look and our
            # write. Joining a free lock just makes us first in line. But never create an
            # item without expires_at (django-sqlite-efs would see it as held for ever).
            write.conditions.append("attribute_exists(expires_at)")
            action = "join the queue of the lock"
        ok, after = self._update(write, action)
        if ok and after is not None:
            self._queued = True
        return ok, after

    def _leave(self, now: float) -> Lease | None:
        if not self._queued:
            return None
        self._queued = False
        record = self._view
        for _ in range(10):
            if record is None:
                return None
            if record.owner == self.owner and record.held(now):
                return self._lease(record)
            mine = [i for i, w in enumerate(record.queue) if w.owner == self.owner]
            if not mine:
                return None
            write = _Write()
            write.value(":me", {"S": self.owner})
            for index in mine[:_MAX_REMOVE]:
                write.removes.append(f"#q[{index}]")
                write.conditions.append(f"#q[{index}].#o = :me")
            ok, record = self._update(write, "leave the queue of the lock")
            if ok:
                return None
        raise LockError(
            f"cannot leave the queue of the lock in the {self.where}: it keeps changing"
        )

    # -- the holder ------------------------------------------------------------------------

    def _renew(self, lease: Lease, now: float) -> Lease:
        write = _Write()
        write.sets.append("expires_at = :exp")
        write.conditions.append("lock_id = :me AND generation = :gen AND expires_at >= :now")
        write.value(":me", {"S": lease.owner})
        write.value(":gen", _num(lease.generation))
        write.value(":exp", _num(now + self.expiration))
        write.value(":now", _num(now))
        ok, record = self._update(write, "renew the lock")
        if not ok or record is None:
            raise self._lost(lease, self._holder(record), "renew")
        return self._lease(record)

    def _release_write(self, record: Record, lease: Lease, now: float) -> _Write:
        """Hand ``record`` (held by ``lease``) to its first live waiter, or free it."""
        write = _Write()
        write.conditions.append("lock_id = :me AND generation = :gen")
        write.value(":me", {"S": lease.owner})
        write.value(":gen", _num(lease.generation))
        write.sets.append("#rel = :gen")
        queue = record.queue
        head = next(
            (
                i
                for i, w in enumerate(queue)
                if w.owner != lease.owner and w.live(now, self.expiration)
            ),
            None,
        )
        if head is not None:
            write.sets += ["lock_id = :next", "expires_at = :exp", "generation = generation + :one"]
            write.value(":next", {"S": queue[head].owner})
            write.value(":exp", _num(now + self.expiration))
            write.value(":one", _num(1))
        else:
            write.sets.append("expires_at = :zero")
            write.removes.append("lock_id")
            write.value(":zero", _num(0))
        if not queue:
            write.conditions.append(_NO_QUEUE)
            write.value(":zero", _num(0))
            return write
        # Remove the head, the stale entries ahead of it and our own, as read; with no
        # live waiter, all of them, and nobody may have joined meanwhile.
        last = head if head is not None else len(queue) - 1
        gone = [i for i, w in enumerate(queue) if i <= last or w.owner == lease.owner]
        for index in gone[:_MAX_REMOVE]:
            write.removes.append(f"#q[{index}]")
            write.entry_is(
                index, queue[index], exactly=index != head and queue[index].owner != lease.owner
            )
        if head is None:
            write.conditions.append("size(#q) = :size")
            write.value(":size", _num(len(queue)))
        return write

    def _release(self, lease: Lease, now: float) -> None:
        view = self._view
        # What we last saw of the item (usually our grant, with the waiters then); if
        # that is stale, the failed write shows the item as it is and we go again.
        record = (
            view
            if view is not None and view.holds(lease)
            else Record(lease.owner, lease.generation, lease.expires_at)
        )
        for _ in range(10):
            ok, after = self._update(self._release_write(record, lease, now), "release the lock")
            if ok:
                if after is not None and after.owner is not None:
                    logger.debug("handed %s over to %s", self.key, after.owner)
                return
            if after is not None and after.holds(lease):
                record = after  # waiters came or went: base the write on the item as it is
                continue
            if after is not None and after.released_after(lease):
                return  # released already (a retry after an answer that never came back)
            raise self._lost(lease, self._holder(after), "release")
        raise TransientLockError(f"cannot release the lock in the {self.where}: it keeps changing")

    def inspect(self) -> Lease | None:
        return self._holder(self._get())

    def waiters(self) -> tuple[str, ...]:
        record = self._get()
        if record is None:
            return ()
        return tuple(w.owner for w in record.live(self.clock(), self.expiration))

    def break_(self) -> Lease | None:
        response, ok = self._call(
            "update_item",
            "break the lock",
            UpdateExpression="REMOVE lock_id SET expires_at = :zero",
            ConditionExpression="attribute_exists(lock_id)",
            ExpressionAttributeValues={":zero": _num(0)},
            ReturnValues="ALL_OLD",
        )
        if not ok:
            return None
        previous = _lease_of(self.key, response.get("Attributes"))
        if previous is not None:
            logger.warning("broke %s key %s held by %s", self.where, self.key, previous.owner)
        return previous


def _table_schema_ok(description: dict[str, Any]) -> bool:
    keys = description.get("KeySchema", [])
    types = {
        a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])
    }
    return keys == [{"AttributeName": "pk", "KeyType": "HASH"}] and types.get("pk") == "S"


def init_table(
    table: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    wait: float = 120.0,
    client: Any = None,
) -> bool:
    """Create the lock table (on-demand capacity, TTL on ``expires_at``) and wait until it
    is active. ``False`` if it already existed with the right key schema (TTL is then
    switched on if it was off); ``LockError`` if it exists with another key schema."""
    from botocore.exceptions import ClientError

    check_table_name(table)
    try:
        # Slow but rare: a long read timeout, so that a CreateTable is not sent twice.
        client = client or make_client(endpoint_url, region, read_timeout=30.0)
    except Exception as exc:
        raise translate_error(exc, table=table, action="connect", init=True) from exc

    def call(operation: str, **params: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(client, operation)(TableName=table, **params)
            return response
        except Exception as exc:
            raise translate_error(exc, table=table, action=operation, init=True) from exc

    created = True
    try:
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        logger.info("created DynamoDB lock table %s", table)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise translate_error(exc, table=table, action="create_table", init=True) from exc
        created = False
    except Exception as exc:
        raise translate_error(exc, table=table, action="create_table", init=True) from exc

    deadline = time.monotonic() + wait
    while True:
        description = call("describe_table")["Table"]
        if not _table_schema_ok(description):
            raise LockError(
                f"DynamoDB table {table} exists with another key schema "
                f"({description.get('KeySchema')}); a lambdalite lock table needs a "
                f"{KEY_SCHEMA}: pick another table name"
            )
        if description.get("TableStatus") == "ACTIVE":
            break
        if time.monotonic() > deadline:
            raise LockError(
                f"DynamoDB table {table} is still {description.get('TableStatus')} "
                f"after {wait:.0f}s"
            )
        time.sleep(0.5)

    ttl = call("describe_time_to_live").get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") in (None, "DISABLED"):
        call(
            "update_time_to_live",
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )
    elif ttl.get("AttributeName") != "expires_at":
        logger.warning("table %s has TTL on %s, not expires_at", table, ttl.get("AttributeName"))
    return created
