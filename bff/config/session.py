"""``[session]``: the store, the cookie, the lifetimes and the key ring."""

from __future__ import annotations

from urllib.parse import urlsplit

from bff.config.reader import HEADER_NAME, Reader, choose, parse_duration, parse_size, table
from bff.config.settings import SessionSettings
from bff.config.values import (
    MAX_PENDING_LOGINS,
    MAX_STORE_REPLICAS,
    MIN_KEY_LENGTH,
    SAME_SITES,
    WRITE_FORMATS,
    SameSite,
    Secret,
)

#: Every scheme ``bff.session.redis_urls`` takes (the ``rediss+`` forms are Sentinel and Cluster over TLS).
STORE_SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
    "unix",
)


def _store(r: Reader) -> str:
    store = r.get("store", str)
    try:
        scheme = urlsplit(store).scheme
    except ValueError:
        # Not quoted: a Redis URL may carry a password.
        r.problem("store", "is not a valid URL (a malformed IPv6 literal in brackets?)")
        return store
    if scheme not in STORE_SCHEMES:
        r.problem(
            "store",
            "expected memory://, redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, "
            "redis+cluster:// or rediss+cluster://",
        )
    return store


def _cookie_name(r: Reader) -> str:
    cookie_name = r.get("cookie_name", str)
    if not cookie_name.startswith("__Host-") or not HEADER_NAME.match(cookie_name):
        r.problem(
            "cookie_name",
            "must start with __Host- (binds the cookie to this origin: Secure, Path=/, no Domain)"
            " and be a valid cookie name",
        )
    return cookie_name


def _same_site(r: Reader) -> SameSite:
    default: SameSite = r.default("same_site")
    value = r.get("same_site", str, default).lower()
    if value == "none":
        r.problem("same_site", "SameSite=None is refused: it sends the session cookie on cross-site requests (CSRF)")
        return default
    same_site = choose(value, SAME_SITES)
    if same_site is None:
        r.problem("same_site", "expected 'strict' or 'lax'")
        return default
    return same_site


def _max_pending_logins(r: Reader) -> int:
    value = r.get("max_pending_logins", int)
    if not 1 <= value <= MAX_PENDING_LOGINS:
        r.problem("max_pending_logins", f"must be between 1 and {MAX_PENDING_LOGINS}")
        return int(r.default("max_pending_logins"))
    return value


def _check_store_max_reply(r: Reader, store_max_reply: int) -> None:
    if store_max_reply < 4096:
        r.problem("store_max_reply", "must be at least 4KiB (a session record must fit)")
    elif store_max_reply > 512 * 1024 * 1024:
        r.problem("store_max_reply", "must not exceed 512MiB (Redis's own largest bulk string)")


def _write_format(r: Reader) -> int:
    value = r.get("write_format", int)
    if value not in WRITE_FORMATS:
        r.problem(
            "write_format",
            "must be 1 or 2 (the store formats this release writes; the previous release reads only 1)",
        )
        return int(r.default("write_format"))
    return value


def _store_replicas(r: Reader, store: str) -> int:
    value = r.get("store_replicas", int)
    if not 0 <= value <= MAX_STORE_REPLICAS:
        r.problem("store_replicas", f"must be between 0 and {MAX_STORE_REPLICAS}")
        return int(r.default("store_replicas"))
    if "store_replicas" not in r.data:  # the default suits every store
        return value
    try:
        scheme = urlsplit(store).scheme
    except ValueError:  # reported under store
        return value
    if value and scheme == "memory":
        r.problem("store_replicas", "needs a Redis store (memory:// has no replicas)")
    elif value and scheme.endswith("+cluster"):
        # WAIT counts the writes of its own connection; a Cluster client spreads them over the nodes.
        r.problem("store_replicas", "is not supported on Redis Cluster")
    return value


def _check_lifetimes(r: Reader, idle: float, absolute: float) -> None:
    if idle <= 0:
        r.problem("idle_timeout", "must be positive")
    if absolute <= 0:
        r.problem("absolute_timeout", "must be positive")
    if 0 < absolute < idle:
        r.problem("idle_timeout", "must not exceed absolute_timeout")


def _keys(r: Reader) -> tuple[Secret, ...]:
    if "keys" not in r.data:
        r.problem(
            "keys",
            "is required: a list of secrets of at least 32 characters, newest last "
            '(e.g. keys = ["${BFF_SESSION_KEY}"]; generate one with `python -c \'import secrets; '
            "print(secrets.token_urlsafe(32))'`)",
        )
    keys = r.string_list("keys", ())
    if "keys" in r.data and not keys and not any(p.startswith(r.key("keys")) for p in r.problems):
        r.problem("keys", "must hold at least one key")
    for i, key in enumerate(keys):
        if len(key) < MIN_KEY_LENGTH:
            r.problem(
                f"keys[{i}]", f"is too short ({len(key)} characters); use at least {MIN_KEY_LENGTH} random characters"
            )
    if len(set(keys)) != len(keys):
        r.problem("keys", "contains the same key twice")
    return tuple(Secret(k) for k in keys)


def read_session(root: Reader) -> SessionSettings:
    r = table(root, "session", SessionSettings, required=True)
    store = _store(r)
    cookie_name = _cookie_name(r)
    same_site = _same_site(r)
    idle = r.converted("idle_timeout", parse_duration)
    absolute = r.converted("absolute_timeout", parse_duration)
    login = r.converted("login_timeout", parse_duration)
    store_timeout = r.converted("store_timeout", parse_duration)
    max_pending = _max_pending_logins(r)
    if login <= 0:
        r.problem("login_timeout", "must be positive")
    store_max_reply = r.converted("store_max_reply", parse_size)
    _check_store_max_reply(r, store_max_reply)
    store_replicas = _store_replicas(r, store)
    _check_lifetimes(r, idle, absolute)
    keys = _keys(r)
    write_format = _write_format(r)
    r.finish()
    return SessionSettings(
        keys=keys,
        store=store,
        cookie_name=cookie_name,
        same_site=same_site,
        idle_timeout=idle,
        absolute_timeout=absolute,
        login_timeout=login,
        max_pending_logins=max_pending,
        store_timeout=store_timeout,
        store_max_reply=store_max_reply,
        write_format=write_format,
        store_replicas=store_replicas,
    )
