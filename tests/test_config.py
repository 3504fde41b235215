"""lambdalite.config: precedence, defaults, target forms and strict validation."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambdalite.config import OPTIONS, Settings, parse_bool, parse_duration
from lambdalite.errors import ConfigurationError

S3 = "s3://my-bucket/some/prefix"


def build(target: str = S3, options: dict[str, Any] | None = None, **env: str) -> Settings:
    return Settings.build(target, options, env=env)


def config_error(key: str, target: str = S3, options: dict[str, Any] | None = None,
                 **env: str) -> ConfigurationError:
    """Build, expect a ConfigurationError whose .key is ``key`` and whose message names it."""
    with pytest.raises(ConfigurationError) as info:
        build(target, options, **env)
    assert info.value.key == key
    assert key in str(info.value)
    return info.value


# -- the table and the dataclass agree ------------------------------------------------------------


def test_every_option_is_a_settings_field_and_back() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert fields[:3] == ["remote", "mode", "database"]
    assert sorted(fields[1:2] + fields[3:]) == sorted(option.name for option in OPTIONS)
    for option in OPTIONS:
        assert option.env[0] == "LAMBDALITE_" + option.name.upper()
        assert option.doc


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        build().timeout = 1.0  # type: ignore[misc]


# -- defaults -------------------------------------------------------------------------------------


def test_defaults_in_replica_mode() -> None:
    s = build()
    assert s.remote == S3
    assert s.mode == "replica"
    assert s.database is None
    assert s.cache_dir == os.path.join(tempfile.gettempdir(), "lambdalite")
    assert (s.max_staleness, s.endpoint_url, s.region) == (0.0, None, None)
    # writers wait their turn by default (the manifest's lease), one timeout sized for a web
    # request governs the wait, and no attempt count runs out first
    assert (s.lock, s.lock_key, s.lock_expiration, s.lock_max_attempts) == (
        "manifest", None, 10.0, None)
    assert (s.timeout, s.transaction_mode) == (15.0, "DEFERRED")
    assert (s.inline_delta_max, s.compact_after_deltas, s.compact_after_bytes) == (
        65536, 64, 1024 * 1024)
    assert s.retention == 7 * 86400.0
    assert s.progress is False


def test_defaults_in_shared_file_mode() -> None:
    s = build("/mnt/efs/app.db")
    assert (s.mode, s.database, s.remote) == ("shared-file", "/mnt/efs/app.db", "file:///mnt/efs/app.db")
    assert (s.lock, s.lock_expiration) == ("file", 30.0)
    assert s.timeout == 15.0


# -- precedence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "from_env", "from_query", "explicit", "expected"),
    [
        ("max_staleness", ("1", 1.0), ("2", 2.0), 3, 3.0),
        ("region", ("us-east-1",) * 2, ("eu-west-1",) * 2, "ap-south-1", "ap-south-1"),
        ("lock_max_attempts", ("4", 4), ("5", 5), 6, 6),
        ("transaction_mode", ("immediate", "IMMEDIATE"), ("Exclusive", "EXCLUSIVE"), "deferred",
         "DEFERRED"),
        ("progress", ("yes", True), ("off", False), "1", True),
        ("retention", ("1d", 86400.0), ("2h", 7200.0), timedelta(minutes=3), 180.0),
        ("cache_dir", ("/env/c",) * 2, ("/query/c",) * 2, "/explicit/c", "/explicit/c"),
    ],
)
def test_precedence_explicit_then_query_then_env_then_default(
    key: str, from_env: tuple[str, object], from_query: tuple[str, object],
    explicit: object, expected: object,
) -> None:
    env = {"LAMBDALITE_" + key.upper(): from_env[0]}
    query = f"{S3}?{key}={from_query[0]}"
    # Each source differs from the one below it, so each assertion shows one rule.
    assert getattr(build(S3), key) != from_env[1] != from_query[1] != expected
    assert getattr(build(S3, None, **env), key) == from_env[1]
    assert getattr(build(query, None, **env), key) == from_query[1]
    assert getattr(build(query), key) == from_query[1]
    assert getattr(build(query, {key: explicit}, **env), key) == expected


def test_explicit_none_falls_through() -> None:
    s = build(f"{S3}?timeout=7", {"timeout": None, "region": None}, LAMBDALITE_REGION="eu-west-1")
    assert (s.timeout, s.region) == (7.0, "eu-west-1")


def test_empty_environment_variable_counts_as_unset() -> None:
    assert build(LAMBDALITE_TIMEOUT="").timeout == 15.0


def test_os_environ_is_the_default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDALITE_MAX_STALENESS", "250ms")
    assert Settings.build(S3).max_staleness == 0.25
    assert Settings.build(S3, env={}).max_staleness == 0.0


def test_compatibility_environment_variables() -> None:
    s = build(SQLITE_LOCK_DYNAMODB_TABLE="locks", SQLITE_LOCK_EXPIRATION="60",
              SQLITE_LOCK_MAX_ATTEMPTS="3")
    assert (s.lock, s.lock_expiration, s.lock_max_attempts) == ("dynamodb://locks", 60.0, 3)


def test_lambdalite_names_win_over_compatibility_names() -> None:
    s = build(SQLITE_LOCK_DYNAMODB_TABLE="locks", LAMBDALITE_LOCK="s3",
              SQLITE_LOCK_EXPIRATION="60", LAMBDALITE_LOCK_EXPIRATION="9",
              SQLITE_LOCK_MAX_ATTEMPTS="3", LAMBDALITE_LOCK_MAX_ATTEMPTS="2")
    assert (s.lock, s.lock_expiration, s.lock_max_attempts) == ("s3", 9.0, 2)
    assert build(f"{S3}?lock=memory", SQLITE_LOCK_DYNAMODB_TABLE="locks").lock == "memory"


def test_aws_endpoint_url_s3_is_left_to_boto3() -> None:
    assert build(AWS_ENDPOINT_URL_S3="http://127.0.0.1:9").endpoint_url is None


def test_callers_mappings_are_not_mutated() -> None:
    options: dict[str, Any] = {"timeout": "10s", "region": None, "lock": "memory"}
    env = {"LAMBDALITE_RETENTION": "1h", "SQLITE_LOCK_DYNAMODB_TABLE": "locks", "HOME": "/root"}
    before = (copy.deepcopy(options), dict(env))
    s = Settings.build(f"{S3}?max_staleness=1", options, env=env)
    s.replace(timeout=1)
    assert (options, env) == before


# -- target forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "remote", "mode", "database"),
    [
        ("file:///srv/db/", "file:///srv/db", "replica", None),
        ("file://localhost/srv//db", "file:///srv/db", "replica", None),
        ("file:///srv/my%20db", "file:///srv/my%20db", "replica", None),
        ("s3://my-bucket", "s3://my-bucket", "replica", None),
        ("s3://my-bucket/", "s3://my-bucket", "replica", None),
        ("s3://my-bucket/a/b//", "s3://my-bucket/a/b", "replica", None),
        ("S3://my.bucket-1/p?region=eu-west-1", "s3://my.bucket-1/p", "replica", None),
        ("memory://test", "memory://test", "replica", None),
        ("/mnt/efs/app.db", "file:///mnt/efs/app.db", "shared-file", "/mnt/efs/app.db"),
        ("/mnt/efs/../efs/./app.db", "file:///mnt/efs/app.db", "shared-file", "/mnt/efs/app.db"),
        ("file:///mnt/efs/app.db?mode=shared-file", "file:///mnt/efs/app.db", "shared-file",
         "/mnt/efs/app.db"),
        ("file:///mnt/efs/app.db?mode=SHARED-FILE", "file:///mnt/efs/app.db", "shared-file",
         "/mnt/efs/app.db"),
    ],
)
def test_target_forms(target: str, remote: str, mode: str, database: str | None) -> None:
    s = build(target)
    assert (s.remote, s.mode, s.database) == (remote, mode, database)


def test_path_objects_are_accepted() -> None:
    s = Settings.build(Path("/mnt/efs/app.db"), {"cache_dir": Path("/var/cache/ll")}, env={})
    assert (s.database, s.cache_dir) == ("/mnt/efs/app.db", "/var/cache/ll")


def test_plain_path_with_mode_replica_is_a_folder_remote() -> None:
    s = build("/srv/remote", {"mode": "replica"})
    assert (s.remote, s.mode, s.database, s.lock) == (
        "file:///srv/remote", "replica", None, "manifest")


def test_mode_from_environment() -> None:
    s = build("file:///mnt/efs/app.db", LAMBDALITE_MODE="shared-file")
    assert (s.mode, s.database) == ("shared-file", "/mnt/efs/app.db")


def test_query_options_are_stripped_from_remote() -> None:
    s = build("s3://my-bucket/p/?region=eu-west-1&max_staleness=2&lock=s3")
    assert (s.remote, s.region, s.max_staleness) == ("s3://my-bucket/p", "eu-west-1", 2.0)
    assert s.lock == "s3"


def test_plain_path_is_taken_literally() -> None:
    assert build("/mnt/efs/odd?name.db").database == "/mnt/efs/odd?name.db"


def test_timeout_minimum_in_shared_file_mode() -> None:
    assert build("/mnt/efs/app.db", {"timeout": 1}).timeout == 3.0
    assert build("/mnt/efs/app.db", {"timeout": 0}).timeout == 3.0
    assert build("/mnt/efs/app.db", {"timeout": "10s"}).timeout == 10.0
    assert build(S3, {"timeout": 1}).timeout == 1.0  # replica mode: as given


# -- every kind of bad input ----------------------------------------------------------------------


def test_unknown_option_suggests_the_closest_name() -> None:
    err = config_error("max_stalenes", S3, {"max_stalenes": 1})
    assert "did you mean 'max_staleness'" in str(err)


def test_unknown_option_with_none_value_is_still_an_error() -> None:
    config_error("regoin", S3, {"regoin": None})


def test_unknown_query_key_suggests_the_closest_name() -> None:
    err = config_error("timeuot", f"{S3}?timeuot=3")
    assert "URL query" in str(err)
    assert "did you mean 'timeout'" in str(err)


def test_repeated_query_key() -> None:
    config_error("timeout", f"{S3}?timeout=1&timeout=2")


def test_unknown_lambdalite_environment_variable() -> None:
    err = config_error("LAMBDALITE_CACHEDIR", LAMBDALITE_CACHEDIR="/x")
    assert "did you mean 'LAMBDALITE_CACHE_DIR'" in str(err)


def test_tooling_and_foreign_environment_variables_are_ignored() -> None:
    env = {"LAMBDALITE_SKIP_DYNAMODB": "1", "SQLITE_LOCK_OTHER": "x", "PATH": "/bin"}
    assert build(**env).lock == "manifest"


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("lock_max_attempts", "many", "an integer >= 1"),
        ("lock_max_attempts", "0", "an integer >= 1"),
        ("lock_max_attempts", 2.5, "an integer >= 1"),
        ("inline_delta_max", str(2 * 1024 * 1024), "from 0 to 1048576"),
        ("compact_after_bytes", True, "an integer"),
        ("max_staleness", "-1", "negative"),
        ("retention", "-2d", "negative"),
        ("timeout", "5 minutes", "500ms"),
        ("timeout", "inf", "duration"),
        ("lock_expiration", "0", "> 0"),
        ("progress", "ture", "did you mean 'true'"),
        ("progress", 2, "boolean"),
        ("transaction_mode", "immediatly", "did you mean 'IMMEDIATE'"),
        ("mode", "shared_file", "did you mean 'shared-file'"),
        ("lock", "dynamo://locks", "dynamodb://TABLE"),
        ("lock", "dynamodb://", "table name"),
        ("lock", "dynamodb://no", "table name"),
        ("lock", "dynamodb://bad table", "table name"),
        ("lock", "filee", "did you mean 'file'"),
        ("endpoint_url", "127.0.0.1:9000", "http"),
        ("endpoint_url", "http://[::1", "http"),
        ("region", "EU West", "region"),
        ("lock_key", "", "non-empty"),
        ("cache_dir", "relative/cache", "absolute"),
    ],
)
def test_invalid_values(key: str, value: object, fragment: str) -> None:
    err = config_error(key, S3, {key: value})
    assert repr(value) in str(err)
    assert fragment in str(err)


def test_invalid_value_from_environment_names_the_variable() -> None:
    err = config_error("timeout", LAMBDALITE_TIMEOUT="soon")
    assert "LAMBDALITE_TIMEOUT" in str(err)
    err = config_error("lock_expiration", SQLITE_LOCK_EXPIRATION="-5")
    assert "SQLITE_LOCK_EXPIRATION" in str(err)


def test_invalid_value_from_query_says_so() -> None:
    err = config_error("max_staleness", f"{S3}?max_staleness=-1")
    assert "URL query" in str(err) and "'-1'" in str(err)


@pytest.mark.parametrize(
    "target",
    ["relative/app.db", "app.db", "file://relative/dir", "s3://ab", "s3://Upper-Case",
     "s3://under_score/p", "s3://a..b/p", "s3://bucket:9000/p", "ftp://host/x", "memory://",
     "", "s3://my-bucket/p#frag", "/mnt/efs/dir/", "s3://[bad/p"],
)
def test_invalid_targets(target: str) -> None:
    config_error("remote", target)


def test_relative_path_message_explains_absolute_is_required() -> None:
    assert "absolute path is required" in str(config_error("remote", "data/app.db"))


def test_credentials_in_urls_are_not_echoed() -> None:
    assert "secret" not in str(config_error("remote", "s3://user:secret@host/p"))
    assert "secret" not in str(config_error("endpoint_url", S3, {"endpoint_url": "ftp://u:secret@h"}))


def test_bad_bucket_is_named() -> None:
    assert "'Bad_Bucket'" in str(config_error("remote", "s3://Bad_Bucket/x"))


@pytest.mark.parametrize("target", ["s3://my-bucket/p?mode=shared-file", "memory://m?mode=shared-file"])
def test_shared_file_mode_needs_a_file(target: str) -> None:
    config_error("mode", target)


def test_shared_file_mode_needs_a_lock() -> None:
    config_error("lock", "/mnt/efs/app.db", {"lock": "none"})


def test_s3_lock_needs_an_s3_remote() -> None:
    config_error("lock", "file:///srv/db", {"lock": "s3"})
    assert build(S3, {"lock": "s3"}).lock == "s3"


def test_lock_forms() -> None:
    assert build(S3, {"lock": "DynamoDB://My_Table.v2"}).lock == "dynamodb://My_Table.v2"
    for kind in ("none", "file", "s3", "memory", "MEMORY"):
        assert build(S3, {"lock": kind}).lock == kind.lower()


# -- replace and describe -------------------------------------------------------------------------


def test_replace_validates_and_keeps_the_rest() -> None:
    s = build(f"{S3}?region=eu-west-1")
    t = s.replace(timeout="2s", lock="s3")
    assert (t.timeout, t.lock, t.region, t.remote) == (2.0, "s3", "eu-west-1", S3)
    assert s.timeout == 15.0
    with pytest.raises(ConfigurationError) as info:
        s.replace(timeout="-1")
    assert info.value.key == "timeout"
    with pytest.raises(ConfigurationError) as info:
        s.replace(timout=1)
    assert info.value.key == "timout"
    with pytest.raises(ConfigurationError) as info:
        s.replace(database="/x.db")
    assert info.value.key == "database"


def test_replace_none_resets_to_default() -> None:
    s = build(S3, {"region": "eu-west-1", "timeout": 9})
    t = s.replace(region=None, timeout=None)
    assert (t.region, t.timeout) == (None, 15.0)


def test_replace_in_shared_file_mode_keeps_the_mode_and_the_minimum() -> None:
    s = build("/mnt/efs/app.db")
    t = s.replace(timeout=1)
    assert (t.mode, t.database, t.timeout) == ("shared-file", "/mnt/efs/app.db", 3.0)
    assert s.replace() == s


def test_replace_remote_infers_the_mode_again() -> None:
    s = build("/mnt/efs/app.db").replace(remote="memory://m", lock="memory")
    assert (s.mode, s.database, s.remote) == ("replica", None, "memory://m")


def test_describe_is_json_and_masks_credentials() -> None:
    s = build(S3, {"endpoint_url": "https://user:secret@s3.example.com:9000/"})
    assert s.endpoint_url == "https://user:secret@s3.example.com:9000"
    described = json.loads(json.dumps(s.describe()))
    assert described["endpoint_url"] == "https://***@s3.example.com:9000"
    assert "secret" not in json.dumps(described)
    assert set(described) == {f.name for f in dataclasses.fields(Settings)}
    assert described["remote"] == S3


# -- the public parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1.5", 1.5), ("500ms", 0.5), ("30s", 30.0), ("10m", 600.0), ("2h", 7200.0),
     ("7d", 604800.0), (" 3 s ", 3.0), (".5", 0.5), ("1e3", 1000.0), (12, 12.0),
     (timedelta(hours=1), 3600.0)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text, key="k") == seconds


@pytest.mark.parametrize("bad", ["", "s", "1x", "1 2", "-1", "nan", "1e999", None, True, [1]])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_duration(bad, key="retention")
    assert info.value.key == "retention"
    assert "retention" in str(info.value)


_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(_FACTORS)))
def test_duration_round_trip_with_units(number: int, unit: str) -> None:
    expected = number / 1000 if unit == "ms" else float(number * _FACTORS[unit])
    assert parse_duration(f"{number}{unit}", key="k") == expected


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_duration_round_trip_of_plain_seconds(seconds: float) -> None:
    assert parse_duration(repr(seconds), key="k") == seconds
    assert parse_duration(str(seconds), key="k") == seconds
    assert parse_duration(seconds, key="k") == seconds


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("0", False), ("true", True), ("False", False), ("YES", True), ("no", False),
     ("on", True), ("off", False), (True, True), (0, False)],
)
def test_parse_bool(text: object, value: bool) -> None:
    assert parse_bool(text, key="progress") is value


@pytest.mark.parametrize("bad", ["", "maybe", "2", 2, None, 1.0])
def test_parse_bool_rejects(bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_bool(bad, key="progress")
    assert info.value.key == "progress"
