"""The DynamoDB lock: one item per lock in a table whose partition key is ``pk`` (string).

The item, compatible with django-sqlite-efs (same table, same ``pk``/``lock_id``/
``expires_at``; both tools exclude each other on the same key)::

    pk          S   the lock key, e.g. "database#/mnt/efs/app.db" or "s3://bucket/prefix#lock"
    lock_id     S   the owner's id; absent while the lock is free
    expires_at  N   POSIX seconds; usable as the table's TTL attribute
    generation  N   bumped on every grant; never goes down

Every operation is one conditional ``UpdateItem`` (``:now`` is the caller's clock; TTL
deletion is lazy, so conditions always compare ``expires_at`` themselves):

* acquire: ``SET lock_id = :me, expires_at = :exp, generation = if_not_exists(generation,
  :floor) + :one`` if ``attribute_not_exists(pk) OR attribute_not_exists(lock_id) OR
  expires_at < :now OR lock_id = :me``, with ``ReturnValuesOnConditionCheckFailure=ALL_OLD``
  so a lost attempt names the holder without a second read. ``lock_id = :me`` makes acquire
  idempotent: a retry after an answer that never came back (the write may have happened)
  succeeds instead of locking itself out until expiry;
* renew: ``SET expires_at = :exp`` if ``lock_id = :me AND generation = :gen AND
  expires_at >= :now``;
* release: ``REMOVE lock_id SET expires_at = :zero`` if ``lock_id = :me AND generation =
  :gen``. The item is kept (not deleted) so that the generation survives; ``expires_at = 0``
  is more than five years in the past, which DynamoDB's TTL never deletes. When an item is
  gone anyway (TTL after a crash, a django-sqlite-efs ``PutItem``), the generation restarts
  from the clock in milliseconds (:func:`~lambdalite.locks.base.first_generation`).

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
_TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "LimitExceededException",
})
_CREDENTIAL_CODES = frozenset({
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "InvalidClientTokenId",
})

_ACQUIRE_UPDATE = (
    "SET lock_id = :me, expires_at = :exp, "
    "generation = if_not_exists(generation, :floor) + :one"
)
_ACQUIRE_CONDITION = (
    "attribute_not_exists(pk) OR attribute_not_exists(lock_id) OR expires_at < :now "
    "OR lock_id = :me"
)


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
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | EndpointConnectionError
                  | ConnectionClosedError):
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

    def _try_acquire(self, now: float) -> Lease | Busy:
        response, won = self._call(
            "update_item",
            "take the lock",
            UpdateExpression=_ACQUIRE_UPDATE,
            ConditionExpression=_ACQUIRE_CONDITION,
            ExpressionAttributeValues={
                ":me": {"S": self.owner},
                ":exp": _num(now + self.expiration),
                ":now": _num(now),
                ":floor": _num(first_generation(now) - 1),
                ":one": _num(1),
            },
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if not won:
            return Busy(_lease_of(self.key, response.get("Item")))
        lease = _lease_of(self.key, response.get("Attributes"))
        if lease is None:  # pragma: no cover - ALL_NEW always has lock_id
            raise LockError(f"{self.where}: UpdateItem returned no item")
        return lease

    def _renew(self, lease: Lease, now: float) -> Lease:
        expires_at = now + self.expiration
        response, ok = self._call(
            "update_item",
            "renew the lock",
            UpdateExpression="SET expires_at = :exp",
            ConditionExpression="lock_id = :me AND generation = :gen AND expires_at >= :now",
            ExpressionAttributeValues={
                ":me": {"S": lease.owner},
                ":gen": _num(lease.generation),
                ":exp": _num(expires_at),
                ":now": _num(now),
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if not ok:
            raise self._lost(lease, _lease_of(self.key, response.get("Item")), "renew")
        return Lease(self.key, lease.owner, lease.generation, float(f"{expires_at:.3f}"),
                     lease.token)

    def _release(self, lease: Lease, now: float) -> None:
        response, ok = self._call(
            "update_item",
            "release the lock",
            UpdateExpression="REMOVE lock_id SET expires_at = :zero",
            ConditionExpression="lock_id = :me AND generation = :gen",
            ExpressionAttributeValues={
                ":me": {"S": lease.owner},
                ":gen": _num(lease.generation),
                ":zero": _num(0),
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if ok:
            return
        item = response.get("Item") or {}
        generation = int(item.get("generation", {}).get("N", -1))
        if "lock_id" not in item and generation == lease.generation:
            return  # released already (a retry after an answer that never came back)
        raise self._lost(lease, _lease_of(self.key, item or None), "release")

    def inspect(self) -> Lease | None:
        response, _ = self._call("get_item", "read the lock", ConsistentRead=True)
        return _lease_of(self.key, response.get("Item"))

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
    types = {a["AttributeName"]: a["AttributeType"]
             for a in description.get("AttributeDefinitions", [])}
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
            raise LockError(f"DynamoDB table {table} is still {description.get('TableStatus')} "
                            f"after {wait:.0f}s")
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
