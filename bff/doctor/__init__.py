"""``bff doctor``: a conformance self-check to run before going live and in CI.

Groups of checks, one module each: ``idp`` (the discovery document and the IdP's clock), ``profile`` (what
``[oidc] par``, ``request_object`` and ``profile`` ask of the IdP, as at start), ``client`` (the client
registration, probed dry), ``redis`` (the session store), ``upstreams`` (each route's upstream), ``browser`` (the
browser-facing contract of a running deployment, with ``--url``). ``report`` holds the ``Check`` result type and
the output formats. Every network call is bounded by ``call_timeout``; secrets are masked in every message.
See docs/doctor.md for every check id, its meaning and its fix.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit

from bff.config import Config
from bff.doctor.browser import check_browser
from bff.doctor.client import check_client
from bff.doctor.idp import check_idp
from bff.doctor.probe import client
from bff.doctor.profile import check_profile
from bff.doctor.redis import check_redis
from bff.doctor.report import Check, is_ok, mask, render_json, render_table, skipped
from bff.doctor.upstreams import check_upstreams
from bff.types import Clock, system_clock

__all__ = ["Check", "is_ok", "render_json", "render_table", "run_doctor"]

DEFAULT_TIMEOUT = 5.0


async def run_doctor(
    config: Config, *, url: str | None = None, call_timeout: float = DEFAULT_TIMEOUT, clock: Clock = system_clock
) -> list[Check]:
    """Every check for ``config`` (and the deployment at ``url``), in a stable order, secrets masked."""
    secrets = _secrets(config)
    async with client(call_timeout, config.oidc.ca_bundle) as idp_http:
        idp = await check_idp(config, idp_http, clock)
        registration, store, upstreams = await asyncio.gather(
            check_client(config, idp_http, idp.metadata),
            check_redis(config, call_timeout),
            check_upstreams(config, call_timeout),
        )
        profile = check_profile(config, idp_http, idp.metadata)
    checks = [*idp.checks, *profile, *registration, *store, *upstreams]
    if url is None:
        checks.append(skipped("browser.url", "no --url: the browser-facing contract of a deployment is not checked"))
    else:
        async with client(call_timeout) as http:
            checks += await check_browser(config, url, http, secrets)
    return mask(checks, secrets)


def _secrets(config: Config) -> list[str]:
    values = [key.reveal() for key in config.session.keys]
    if config.oidc.client_secret is not None:
        values.append(config.oidc.client_secret.reveal())
    try:
        password = urlsplit(config.session.store).password
    except ValueError:
        password = None
    if password:
        values += [password, unquote(password)]
    return values
