"""``bff doctor``: a conformance self-check to run before going live and in CI.

Groups of checks, one module each: ``idp`` (the discovery document and the IdP's clock), ``profile`` (what
``[oidc] par``, ``request_object`` and ``profile`` ask of the IdP, as at start), ``client`` (the client
registration, probed dry with the credentials ``credentials`` builds as bff's logins do), ``redis`` (the session
store), ``upstreams`` (each route's upstream), ``browser`` (the browser-facing contract of a running deployment,
with ``--url``). ``report`` holds the ``Check`` result type and the output formats. Every network call is bounded by
``call_timeout``; secrets are masked in every message.
With ``[[frontends]]`` every frontend is checked in one run, each finding naming its frontend. See docs/doctor.md
for every check id, its meaning and its fix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from bff.config import Config
from bff.config.frontends import find_frontend, frontend_config
from bff.doctor.browser import check_browser
from bff.doctor.client import check_client
from bff.doctor.credentials import idp_certificate
from bff.doctor.idp import check_idp
from bff.doctor.probe import client
from bff.doctor.profile import check_profile
from bff.doctor.redis import check_redis
from bff.doctor.report import Check, is_ok, mask, of_frontend, render_json, render_table, skipped
from bff.doctor.upstreams import check_upstreams
from bff.errors import ConfigError
from bff.types import Clock, system_clock

__all__ = ["Check", "is_ok", "render_json", "render_table", "run_doctor"]

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Target:
    """One frontend to check: its name (None without ``[[frontends]]``), its single-frontend view, its prefix."""

    name: str | None
    config: Config
    path_prefix: str = ""


def targets(config: Config, frontend: str | None = None) -> list[Target]:
    """Every ``[[frontends]]`` entry, or the one named ``frontend``; the config itself without ``[[frontends]]``."""
    if not config.frontends:
        if frontend:
            raise ConfigError(["--frontend: this config has no [[frontends]]"])
        return [Target(None, config)]
    entries = config.frontends
    if frontend:
        entry = find_frontend(config, frontend)
        if entry is None:
            names = ", ".join(e.name for e in config.frontends)
            raise ConfigError([f"--frontend: no frontend {frontend!r} (one of: {names})"])
        entries = (entry,)
    return [Target(e.name, frontend_config(config, e), e.path_prefix) for e in entries]


async def run_doctor(
    config: Config,
    *,
    url: str | None = None,
    call_timeout: float = DEFAULT_TIMEOUT,
    clock: Clock = system_clock,
    frontend: str | None = None,
) -> list[Check]:
    """Every check for ``config`` (and the deployment at ``url``), in a stable order, secrets masked. With
    ``[[frontends]]``, every frontend's (``frontend``: that one's only), each check naming its frontend; the session
    store, which they share, is checked once. Raises ConfigError for an unknown ``frontend``."""
    chosen = targets(config, frontend)
    secrets = _secrets(config)
    several = len(chosen) > 1
    store, found = await asyncio.gather(
        check_redis(config, call_timeout),
        asyncio.gather(*(_frontend(target, url, call_timeout, clock, secrets, several=several) for target in chosen)),
    )
    heads = [check for head, _ in found for check in head]
    tails = [check for _, tail in found for check in tail]
    return mask([*heads, *store, *tails], secrets)


async def _frontend(
    target: Target, url: str | None, call_timeout: float, clock: Clock, secrets: list[str], *, several: bool
) -> tuple[list[Check], list[Check]]:
    """One frontend's checks: those before the store's (IdP, profile, client) and those after (upstreams, browser)."""
    config = target.config
    certificate = idp_certificate(config.oidc, clock)
    async with client(call_timeout, config.oidc.ca_bundle, certificate.files) as idp_http:
        idp = await check_idp(config, idp_http, clock)
        registration, upstreams = await asyncio.gather(
            check_client(config, idp_http, idp.metadata, certificate=certificate, clock=clock),
            check_upstreams(config, call_timeout),
        )
        profile = check_profile(config, idp_http, idp.metadata, clock)
    origin = config.server.public_origin
    if url is None:
        browser = [skipped("browser.url", "no --url: the browser-facing contract of a deployment is not checked")]
    elif several and _origin_of(url) != origin:
        browser = [
            skipped(
                "browser.url",
                f"--url is not this frontend's public_origin {origin}: check it with"
                f" bff doctor --frontend {target.name} --url {origin}",
            )
        ]
    else:
        async with client(call_timeout) as http:
            browser = await check_browser(config, url, http, secrets, path_prefix=target.path_prefix)
    head = of_frontend([*idp.checks, *profile, *registration], target.name)
    return head, of_frontend([*upstreams, *browser], target.name)


def _origin_of(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return f"{parts.scheme}://{parts.netloc}"


def _secrets(config: Config) -> list[str]:
    """Every secret of the configuration: the session keys, each frontend's client secret and client key
    passphrase, the Redis password."""
    values = [key.reveal() for key in config.session.keys]
    for oidc in [config.oidc, *(entry.oidc for entry in config.frontends)]:
        for secret in (oidc.client_secret, oidc.client_key_password):
            if secret is not None:
                values.append(secret.reveal())
    try:
        password = urlsplit(config.session.store).password
    except ValueError:
        password = None
    if password:
        values += [password, unquote(password)]
    return values
