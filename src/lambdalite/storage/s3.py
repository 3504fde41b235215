"""``s3://bucket[/prefix]``: Amazon S3 or an S3-compatible server as the remote.

* The boto3 client is created on first use (the constructor does no I/O), from
  boto3's default credential chain (the Lambda execution role in production;
  lambdalite never takes credentials in its settings). ``endpoint_url=None``
  leaves the endpoint to boto3, which honours ``AWS_ENDPOINT_URL_S3``.
* Requests are signed with SigV4 and use botocore's ``standard`` retry mode with
  bounded connect and read timeouts, except conditional writes (below).
* Conditional requests map one to one: ``get(if_none_match=)`` is a GET with
  ``If-None-Match`` (a 304 returns ``None``), ``put(if_none_match=True)`` sends
  ``If-None-Match: *``, ``put(if_match=)`` and ``delete(if_match=)`` send
  ``If-Match``. ETags are returned without their quotes.
* A conditional write is sent exactly once (a second client with retries off):
  if the SDK retried it by itself, a retry refused with 412 could hide that the
  first attempt won, and the caller would take a published commit for a lost
  race. So a 412 here always means "this request did not write", and any other
  failure of a conditional write (a lost answer, a 5xx, a timeout) is a
  :class:`~lambdalite.errors.TransientStorageError` whose outcome is open; the
  caller settles it (the engine, by reading the manifest back and looking for
  its nonce) and retries by itself. ``request_sent`` is False on that error only
  when the connection could not even be made.
* Every failure on the wire becomes a lambdalite error: botocore's, and the
  ``urllib3``/socket errors that a broken connection raises while a body is
  being read.
* ``put_file`` / ``get_file`` use boto3's managed transfers (multipart above
  ``multipart_threshold``); the ETag of an uploaded file is read back with a
  HEAD, so use them for immutable keys.
* ``list`` sorts what the server returns: some S3-compatible servers (SeaweedFS)
  list in folder-tree order rather than in UTF-8 byte order.
* Every SDK error goes through :func:`translate_error`, the one place that maps
  them to the :mod:`lambdalite.errors` tree.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
)

from lambdalite.errors import (
    ConfigurationError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.storage._common import check_key, url_error
from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback

__all__ = ["REQUIRED_IAM_ACTIONS", "S3Storage", "translate_error"]

logger = logging.getLogger("lambdalite.storage.s3")

_FORM = "s3://bucket[/prefix]"
_MIB = 1 << 20
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

REQUIRED_IAM_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket")
"""The IAM actions lambdalite needs on the bucket (ListBucket) and its objects."""

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_TRANSIENT_CODES = frozenset(
    {
        "ConditionalRequestConflict",
        "OperationAborted",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
    }
)
_REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)


def translate_error(
    exc: BaseException,
    *,
    remote: str,
    key: str | None,
    bucket: str,
    endpoint: str,
    op: str = "request",
    conditional: bool = False,
) -> StorageError:
    """Map an SDK exception to the :mod:`lambdalite.errors` tree (the caller chains it).

    ``conditional`` says the request carried ``If-Match`` (a 404 then means the
    condition failed, as on AWS; SeaweedFS answers 412). ``endpoint`` is named in
    connection errors. The message never contains credentials.
    """
    where = f"S3 {op} of {key!r} in {remote}" if key else f"S3 {op} in {remote}"
    kw: dict[str, Any] = {"remote": remote, "key": key}
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"{code or status}: {error.get('Message', '')}".rstrip(": ")
        if code == "NoSuchBucket":
            return NotFoundError(
                f"{where}: bucket {bucket!r} does not exist at {endpoint}; create it "
                f"(for example `aws s3 mb s3://{bucket}`) or fix the remote URL",
                **kw,
            )
        if status == 412 or code == "PreconditionFailed":
            return PreconditionFailedError(f"{where}: precondition failed ({detail})", **kw)
        if conditional and (status == 404 or code in _NOT_FOUND_CODES):
            return PreconditionFailedError(f"{where}: the object is gone ({detail})", **kw)
        if status == 404 or code in _NOT_FOUND_CODES:
            return NotFoundError(f"{where}: no such object", **kw)
        if code in _TRANSIENT_CODES or status in (409, 429) or status >= 500:
            return TransientStorageError(f"{where}: transient failure, retry ({detail})", **kw)
        if code in _REFUSED_CODES or status == 403:
            return StorageError(
                f"{where}: the credentials were refused ({code or status}). Check the AWS "
                "credentials boto3 finds (the Lambda execution role in production) and that "
                f"they allow {', '.join(REQUIRED_IAM_ACTIONS)} on the bucket and its objects",
                **kw,
            )
        return StorageError(f"{where}: {detail}", **kw)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError)):
        return TransientStorageError(
            f"{where}: could not connect to the S3 endpoint {endpoint}; if the remote is not "
            "Amazon S3, set endpoint_url (or the AWS_ENDPOINT_URL_S3 environment variable) "
            "to the server's URL",
            request_sent=False,
            **kw,
        )
    if isinstance(exc, (HTTPClientError, IncompleteReadError)) or _is_transport_error(exc):
        return TransientStorageError(
            f"{where}: network failure talking to {endpoint}: {type(exc).__name__}: {exc}", **kw
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return StorageError(
            f"{where}: no usable AWS credentials ({exc}). lambdalite uses boto3's default "
            "credential chain: the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment "
            "variables, a profile in the shared config and credentials files (AWS_PROFILE), "
            "or a container or instance role (on Lambda, the execution role)",
            **kw,
        )
    last = getattr(exc, "last_exception", None)  # s3transfer's RetriesExceededError
    if isinstance(last, BaseException) and last is not exc:
        translated = translate_error(
            last,
            remote=remote,
            key=key,
            bucket=bucket,
            endpoint=endpoint,
            op=op,
            conditional=conditional,
        )
        if type(translated) is StorageError:
            return TransientStorageError(str(translated), **kw)
        return translated
    return StorageError(f"{where}: {type(exc).__name__}: {exc}", **kw)


def _is_transport_error(exc: BaseException) -> bool:
    """A broken connection seen below botocore (while a body streams, or on a bare socket)."""
    import urllib3.exceptions

    return isinstance(
        exc,
        (
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ),
    )


def _unquote_etag(etag: str) -> str:
    return etag.strip('"')


def _check_bucket(bucket: str, url: str) -> None:
    problem = None
    if not bucket:
        problem = "needs a bucket name"
    elif not _BUCKET_RE.match(bucket) or ".." in bucket:
        problem = (
            f"has an invalid bucket name {bucket!r} (3 to 63 lowercase letters, digits, dots "
            "and hyphens, starting and ending with a letter or digit)"
        )
    else:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(bucket)
            problem = f"has a bucket name {bucket!r} formatted as an IP address"
    if problem is not None:
        raise url_error(url, problem, _FORM)


#: Bodies up to this size go with their headers: no ``Expect: 100-continue`` round trip.
SMALL_BODY = 1024 * 1024


def _no_continue_for_small_bodies(request: Any, **_: Any) -> None:
    """botocore asks S3 for ``100 Continue`` before every PutObject body: one more round trip
    (20 ms and more on a real network) for a manifest or a delta of a few KiB, that a refused
    conditional write would save only a few KiB of upload for. Small bodies go at once.
    (``Expect`` is not a signed header, so dropping it keeps the signature valid.)"""
    headers = request.headers
    if "Expect" not in headers:
        return
    try:
        length = int(headers.get("Content-Length", SMALL_BODY + 1))
    except (TypeError, ValueError):
        return
    if length <= SMALL_BODY:
        del headers["Expect"]


class S3Storage:
    """A remote in an S3 bucket, under an optional prefix (see the module docstring)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        multipart_threshold: int = 8 * _MIB,
        multipart_chunksize: int = 8 * _MIB,
    ) -> None:
        prefix = prefix.strip("/")
        self._url = f"s3://{bucket}/{prefix}".rstrip("/")
        _check_bucket(bucket, self._url)
        if prefix:
            try:
                check_key(prefix)
            except ConfigurationError as exc:
                raise url_error(self._url, f"has an invalid prefix: {exc}", _FORM) from exc
        if endpoint_url is not None and urlsplit(endpoint_url).scheme not in ("http", "https"):
            raise ConfigurationError(
                f"endpoint_url {endpoint_url!r} must be an http:// or https:// URL",
                key="endpoint_url",
            )
        self._bucket = bucket
        self._prefix = prefix + "/" if prefix else ""
        self._endpoint_url = endpoint_url
        self._region = region
        self._timeouts = (connect_timeout, read_timeout)
        self._max_attempts = max_attempts
        self._multipart = (multipart_threshold, multipart_chunksize)
        self._lock = threading.Lock()
        self._s3: Any = None
        self._s3_once: Any = None  # retries off: conditional writes (see the module docstring)
        self._transfers: Any = None
        self._pid = os.getpid()

    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> S3Storage:
        """Parse ``s3://bucket[/prefix]`` (no credentials, port, query or fragment)."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "s3":
            raise url_error(url, "is not an s3:// URL", _FORM)
        if "@" in parts.netloc:
            raise url_error(
                url,
                "must not carry credentials (lambdalite uses boto3's default credential chain)",
                _FORM,
            )
        if ":" in parts.netloc:
            raise url_error(url, "must not have a port (use endpoint_url for a server)", _FORM)
        if parts.query or parts.fragment:
            raise url_error(url, "has a query or fragment", _FORM)
        _check_bucket(parts.netloc, url)
        return cls(parts.netloc, unquote(parts.path), endpoint_url=endpoint_url, region=region)

    @property
    def url(self) -> str:
        return self._url

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix, empty or ending with ``/``."""
        return self._prefix

    @property
    def endpoint_url(self) -> str:
        """The endpoint in use (as resolved by boto3 once the client exists)."""
        if self._s3 is not None:
            return str(self._s3.meta.endpoint_url)
        return self._endpoint_url or "the default Amazon S3 endpoint"

    # -- operations ------------------------------------------------------------------------

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._full(key)}
        if if_none_match is not None:
            kwargs["IfNoneMatch"] = f'"{if_none_match}"'
        with self._translating("get", key):
            try:
                response = self._client().get_object(**kwargs)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) == "304":
                    return None  # not modified: boto3 surfaces the 304 as an error
                raise
            data = response["Body"].read()
        return Blob(data, _unquote_etag(response["ETag"]))

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._full(key), "Body": data}
        if if_match is not None:
            kwargs["IfMatch"] = f'"{if_match}"'
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        client = self._client(once=if_match is not None or if_none_match)
        with self._translating("put", key, conditional=if_match is not None):
            response = client.put_object(**kwargs)
        return _unquote_etag(response["ETag"])

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._full(key)}
        if if_match is not None:
            kwargs["IfMatch"] = f'"{if_match}"'
        with self._translating("delete", key, conditional=if_match is not None):
            self._client(once=if_match is not None).delete_object(**kwargs)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        items: list[ObjectInfo] = []
        with self._translating("list", prefix or None):
            pages = (
                self._client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self._bucket, Prefix=self._prefix + prefix)
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    items.append(
                        ObjectInfo(
                            key=obj["Key"][len(self._prefix) :],
                            size=int(obj["Size"]),
                            etag=_unquote_etag(obj["ETag"]),
                            modified=obj["LastModified"].timestamp(),
                        )
                    )
        items.sort(key=lambda info: info.key)
        yield from items

    def put_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        full = self._full(key)
        with self._translating("put_file", key):
            future = self._transfer_manager().upload(
                path, self._bucket, full, subscribers=_subscribers(progress)
            )
            future.result()
            head = self._client().head_object(Bucket=self._bucket, Key=full)
        return _unquote_etag(head["ETag"])

    def get_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        full = self._full(key)
        with self._translating("get_file", key):
            future = self._transfer_manager().download(
                self._bucket, full, path, subscribers=_subscribers(progress)
            )
            future.result()
            etag = getattr(future.meta, "etag", None)  # s3transfer < 0.13 does not record it
            if etag is None:
                etag = self._client().head_object(Bucket=self._bucket, Key=full)["ETag"]
        return _unquote_etag(str(etag))

    def close(self) -> None:
        """Release the client and its connection pool; a later call opens a new one."""
        with self._lock:
            transfers, clients = self._transfers, (self._s3, self._s3_once)
            self._transfers = self._s3 = self._s3_once = None
        if transfers is not None:
            transfers.shutdown()
        for client in clients:
            if client is not None:
                client.close()

    # -- internals -------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _client(self, *, once: bool = False) -> Any:
        """The S3 client; ``once``: the one whose requests botocore never retries."""
        with self._lock:
            if self._pid != os.getpid():  # forked: never share the parent's connections
                self._s3 = self._s3_once = self._transfers = None
                self._pid = os.getpid()
            if once:
                if self._s3_once is None:
                    self._s3_once = self._new_client(attempts=1)
                return self._s3_once
            if self._s3 is None:
                self._s3 = self._new_client(attempts=self._max_attempts + 1)
                logger.debug(
                    "S3 client for %s: endpoint %s, region %s",
                    self._url,
                    self._s3.meta.endpoint_url,
                    self._s3.meta.region_name,
                )
            return self._s3

    def _new_client(self, *, attempts: int) -> Any:
        import boto3.session
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            max_pool_connections=16,
        )
        session = boto3.session.Session(
            botocore_session=_botocore_session(), region_name=self._region
        )
        client = session.client("s3", endpoint_url=self._endpoint_url, config=config)
        client.meta.events.register("before-send.s3.PutObject", _no_continue_for_small_bodies)
        return client

    def _transfer_manager(self) -> Any:
        client = self._client()
        with self._lock:
            if self._transfers is None:
                from boto3.s3.transfer import TransferConfig, create_transfer_manager

                config = TransferConfig(
                    multipart_threshold=self._multipart[0],
                    multipart_chunksize=self._multipart[1],
                    max_concurrency=8,
                    preferred_transfer_client="classic",
                )
                self._transfers = create_transfer_manager(client, config)
            return self._transfers

    @contextlib.contextmanager
    def _translating(
        self, op: str, key: str | None, *, conditional: bool = False
    ) -> Iterator[None]:
        try:
            yield
        except (StorageError, ConfigurationError):
            raise
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, op, key, conditional) from exc
        except Exception as exc:
            if getattr(exc, "last_exception", None) is None and not _is_transport_error(exc):
                raise  # not from the SDK (a local file error, a bug): let it through as is
            raise self._translate(exc, op, key, conditional) from exc

    def _translate(
        self, exc: BaseException, op: str, key: str | None, conditional: bool
    ) -> StorageError:
        return translate_error(
            exc,
            remote=self._url,
            key=key,
            bucket=self._bucket,
            endpoint=self.endpoint_url,
            op=op,
            conditional=conditional,
        )


_loader_lock = threading.Lock()
_loader: Any = None


def _botocore_session() -> Any:
    """A new botocore session (own credentials) sharing one process-wide model loader.

    Loading the S3 service model is most of the ~0.2 s a new client costs; the
    loader only caches the models shipped with botocore, so sharing it is safe.
    """
    global _loader
    import botocore.session

    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


def _subscribers(progress: ProgressCallback | None) -> list[Any]:
    """s3transfer subscribers calling ``progress`` (serialized: transfers use threads)."""
    if progress is None:
        return []
    from boto3.s3.transfer import ProgressCallbackInvoker

    lock = threading.Lock()

    def call(amount: int) -> None:
        with lock:
            progress(amount)

    return [ProgressCallbackInvoker(call)]
