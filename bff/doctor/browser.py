"""The browser-facing contract of a running deployment, as the IETF "OAuth 2.0 for Browser-Based Applications"
BFF section (6.1) asks of it, probed from outside with plain HTTP requests:

* the HTML is served with ``Content-Security-Policy`` and ``X-Content-Type-Options: nosniff``, over https with
  ``Strict-Transport-Security`` (RFC 6797);
* ``/bff/login`` sets only ``__Host-`` cookies with ``Secure``, ``HttpOnly``, ``SameSite``, ``Path=/`` and no
  ``Domain`` (RFC 6265bis 4.1.3.2), and sends the browser to the IdP with PKCE S256;
* ``/bff/*`` answers no CORS (``Access-Control-Allow-*``) to another origin;
* a request without ``X-CSRF`` or with ``Sec-Fetch-Site: cross-site`` is refused;
* no answer carries a token (a JWT, an OAuth token member) or a configured secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from bff.config import Config
from bff.config.reader import is_loopback_host
from bff.doctor.probe import Answer, NoAnswer, call
from bff.doctor.report import Check, failed, passed, skipped, warned

#: Another origin for the CORS probes (RFC 6761: ``.invalid`` never resolves).
FOREIGN_ORIGIN = "https://bff-doctor.invalid"
NAVIGATION = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
SAME_ORIGIN_FETCH = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
#: Half a year: the HSTS preload list's floor is a year; less than this is a short-lived promise.
HSTS_MIN_AGE = 15_552_000
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_TOKEN_MEMBER = re.compile(rb'"(access_token|refresh_token|id_token)"\s*:\s*"')
COOKIE_IDS = (
    "browser.cookie.prefix",
    "browser.cookie.secure",
    "browser.cookie.httponly",
    "browser.cookie.samesite",
    "browser.cookie.path",
    "browser.cookie.domain",
)


async def check_browser(
    config: Config, url: str, http: httpx.AsyncClient, secrets: Sequence[str], *, path_prefix: str = ""
) -> list[Check]:
    """``path_prefix``: the ``[[frontends]]`` entry's, under which its pages and ``/bff/*`` are served."""
    base = url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [failed("browser.url", f"--url {url!r} is not an http(s) origin", "pass --url https://your.app")]
    seen: list[Answer] = []

    async def get(path: str, headers: dict[str, str], method: str = "GET") -> Answer | NoAnswer:
        answer = await call(http, method, base + path_prefix + path, headers=headers)
        if isinstance(answer, Answer):
            seen.append(answer)
        return answer

    home = await get("/", {**NAVIGATION, "Accept": "text/html"})
    if isinstance(home, NoAnswer):
        return [failed("browser.reachable", home.reason, f"start the deployment or fix --url {url}")]
    checks = [passed("browser.reachable", f"{home.url} answered HTTP {home.status}"), _origin(config, base)]
    checks.append(_hsts(home, parts.scheme, parts.hostname))
    checks += _html(home)
    login = await get("/bff/login", NAVIGATION)
    checks += _login(login)
    checks.append(_cors([await get("/bff/user", _preflight(), "OPTIONS"), await get("/bff/user", _cors_get())]))
    path = _csrf_path(config)
    checks.append(_refused("browser.csrf.header", path, await get(path, SAME_ORIGIN_FETCH), "without X-CSRF"))
    cross = {**SAME_ORIGIN_FETCH, "Sec-Fetch-Site": "cross-site", "X-CSRF": "1"}
    checks.append(_refused("browser.csrf.fetch_site", path, await get(path, cross), "with Sec-Fetch-Site: cross-site"))
    checks.append(_no_tokens(seen, secrets))
    return checks


def _origin(config: Config, base: str) -> Check:
    if base == config.server.public_origin:
        return passed("browser.origin", "--url is [server] public_origin")
    return warned(
        "browser.origin",
        f"--url {base} is not [server] public_origin {config.server.public_origin}: bff's Origin checks and"
        " redirect URI use public_origin",
        "set [server] public_origin to the origin browsers use, or probe that origin with --url",
    )


def _hsts(home: Answer, scheme: str, host: str) -> Check:
    if scheme == "http":
        if is_loopback_host(host):
            return skipped("browser.hsts", "plain http on a loopback host (local development): HSTS is for https")
        return failed(
            "browser.hsts",
            "the deployment is served over plain http: the __Host- cookie needs https",
            "serve it over https only, with Strict-Transport-Security",
        )
    value = home.headers.get("strict-transport-security")
    fix = "send Strict-Transport-Security: max-age=31536000; includeSubDomains (at bff's TLS terminator)"
    if value is None:
        return warned("browser.hsts", "no Strict-Transport-Security on the HTML (RFC 6797)", fix)
    match = re.search(r"max-age\s*=\s*\"?(\d+)", value, re.IGNORECASE)
    age = int(match.group(1)) if match else 0
    if age < HSTS_MIN_AGE:
        return warned("browser.hsts", f"Strict-Transport-Security max-age={age}: shorter than half a year", fix)
    return passed("browser.hsts", f"Strict-Transport-Security max-age={age}")


def _html(home: Answer) -> list[Check]:
    if home.status != 200 or "text/html" not in home.headers.get("content-type", ""):
        reason = f"/ is not an HTML page (HTTP {home.status}): the SPA is served elsewhere"
        return [skipped("browser.html.csp", reason), skipped("browser.html.nosniff", reason)]
    csp = home.headers.get("content-security-policy")
    if csp is None:
        csp_check = failed(
            "browser.html.csp",
            "the HTML has no Content-Security-Policy: an injected script runs",
            "serve the SPA with a Content-Security-Policy (bff's [frontend] directory does; so must any CDN)",
        )
    elif ("'unsafe-inline'" in csp and "script-src" in csp) or "unsafe-eval" in csp:
        csp_check = warned(
            "browser.html.csp",
            "the Content-Security-Policy allows inline or eval'd script",
            "remove 'unsafe-inline' and 'unsafe-eval' from script-src",
        )
    else:
        csp_check = passed("browser.html.csp", "Content-Security-Policy on the HTML")
    if home.headers.get("x-content-type-options", "").strip().lower() == "nosniff":
        nosniff = passed("browser.html.nosniff", "X-Content-Type-Options: nosniff")
    else:
        nosniff = failed(
            "browser.html.nosniff",
            "the HTML has no X-Content-Type-Options: nosniff",
            "send X-Content-Type-Options: nosniff with every answer",
        )
    return [csp_check, nosniff]


def _login(login: Answer | NoAnswer) -> list[Check]:
    if isinstance(login, NoAnswer):
        return [failed("browser.login", login.reason, "check the deployment's /bff/* routing")]
    location = login.headers.get("location", "")
    query = dict(parse_qsl(urlsplit(location).query))
    # A pushed (RFC 9126) or signed (RFC 9101) request carries its PKCE challenge and state out of the URL's sight.
    hidden = bool(query.get("client_id")) and bool(query.get("request_uri") or query.get("request"))
    plain = query.get("code_challenge_method") == "S256" and bool(query.get("state"))
    if login.status not in (302, 303) or not (plain or hidden):
        return [
            failed(
                "browser.login",
                f"/bff/login answered HTTP {login.status} without a redirect to the IdP carrying PKCE S256 and state",
                "route /bff/* to bff (unchanged) and check bff's log",
            ),
            *(skipped(i, "no login redirect") for i in COOKIE_IDS),
        ]
    how = "a pushed or signed request (RFC 9126, RFC 9101)" if hidden else "PKCE S256, state and nonce"
    checks = [passed("browser.login", f"/bff/login redirects to the IdP with {how}")]
    cookies: list[tuple[str, dict[str, str | bool]]] = []
    for header in login.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        cookies.extend((name, dict(morsel.items())) for name, morsel in jar.items())
    if not cookies:
        return [*checks, *(failed(i, "/bff/login set no cookie", "route /bff/* to bff") for i in COOKIE_IDS)]
    names = ", ".join(name for name, _ in cookies)

    def rule(check_id: str, ok: bool, broken: str, fix: str, good: str) -> Check:
        return passed(check_id, f"{good} ({names})") if ok else failed(check_id, broken, fix)

    bad_prefix = [n for n, _ in cookies if not n.startswith("__Host-")]
    bad_secure = [n for n, a in cookies if not a.get("secure")]
    bad_httponly = [n for n, a in cookies if not a.get("httponly")]
    bad_samesite = [n for n, a in cookies if str(a.get("samesite", "")).lower() not in ("strict", "lax")]
    bad_path = [n for n, a in cookies if a.get("path") != "/"]
    bad_domain = [n for n, a in cookies if a.get("domain")]
    proxy = "set by something in front of bff? Let bff's Set-Cookie through unchanged"
    return [
        *checks,
        rule(
            COOKIE_IDS[0],
            not bad_prefix,
            f"cookie(s) without the __Host- prefix: {bad_prefix}",
            f"keep [session] cookie_name __Host-…; {proxy}",
            "__Host- prefix",
        ),
        rule(COOKIE_IDS[1], not bad_secure, f"cookie(s) without Secure: {bad_secure}", proxy, "Secure"),
        rule(
            COOKIE_IDS[2],
            not bad_httponly,
            f"cookie(s) without HttpOnly (scripts, and an XSS, can read them): {bad_httponly}",
            proxy,
            "HttpOnly",
        ),
        rule(
            COOKIE_IDS[3],
            not bad_samesite,
            f"cookie(s) without SameSite=Strict or Lax: {bad_samesite}",
            f"keep [session] same_site strict or lax; {proxy}",
            "SameSite",
        ),
        rule(COOKIE_IDS[4], not bad_path, f"cookie(s) without Path=/: {bad_path}", proxy, "Path=/"),
        rule(
            COOKIE_IDS[5],
            not bad_domain,
            f"cookie(s) with a Domain attribute (sent to other hosts): {bad_domain}",
            proxy,
            "no Domain",
        ),
    ]


def _preflight() -> dict[str, str]:
    return {
        "Origin": FOREIGN_ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-csrf",
    }


def _cors_get() -> dict[str, str]:
    return {"Origin": FOREIGN_ORIGIN, "X-CSRF": "1", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}


def _cors(answers: Sequence[Answer | NoAnswer]) -> Check:
    granted = sorted(
        {
            name.lower()
            for a in answers
            if isinstance(a, Answer)
            for name in a.headers
            if name.lower().startswith("access-control-allow-")
        }
    )
    if not granted:
        return passed("browser.cors", f"no Access-Control-Allow-* for {FOREIGN_ORIGIN} on /bff/user (OPTIONS, GET)")
    return failed(
        "browser.cors",
        f"/bff/user answers another origin with CORS headers ({', '.join(granted)}): other sites may read it",
        "remove every CORS rule for /bff/* (and the API routes) from bff's front (proxy, CDN, ingress)",
    )


def _csrf_path(config: Config) -> str:
    """A proxied route that takes GET, one that needs no session first (then only the CSRF guard can refuse the
    probe), else /bff/user."""
    routes = [r for r in config.routes if not r.methods or "GET" in r.methods]
    routes.sort(key=lambda r: r.token not in ("none", "user_or_none"))
    return routes[0].path if routes else "/bff/user"


def _refused(check_id: str, path: str, answer: Answer | NoAnswer, how: str) -> Check:
    if isinstance(answer, NoAnswer):
        return failed(check_id, answer.reason, "check the deployment's routing")
    fix = "route the API paths through bff (it checks X-CSRF and Sec-Fetch-Site) and strip nothing in front of it"
    if answer.status not in (401, 403):
        return failed(
            check_id, f"GET {path} {how} was not refused (HTTP {answer.status}): cross-site requests reach it", fix
        )
    try:
        error: Any = json.loads(answer.body).get("error")
    except (ValueError, AttributeError):
        error = None
    if error == "csrf":
        return passed(check_id, f"GET {path} {how}: refused by the CSRF guard (HTTP {answer.status})")
    return warned(
        check_id,
        f"GET {path} {how}: HTTP {answer.status}, but not bff's csrf error: the CSRF guard itself is not confirmed",
        fix,
    )


def _no_tokens(seen: Sequence[Answer], secrets: Sequence[str]) -> Check:
    found = []
    needles = [s.encode() for s in secrets if len(s) >= 8]
    for answer in seen:
        blob = b"\n".join([*(f"{k}: {v}".encode() for k, v in answer.headers.multi_items()), answer.body])
        path = urlsplit(answer.url).path or "/"
        if _JWT.search(blob):
            found.append(f"a JWT in the answer to {path}")
        if _TOKEN_MEMBER.search(blob):
            found.append(f"an OAuth token member in the answer to {path}")
        if any(needle in blob for needle in needles):
            found.append(f"a configured secret in the answer to {path}")
    if found:
        return failed(
            "browser.no_token",
            "; ".join(found),
            "find what puts it there (a debug page, an upstream echoing headers) and remove it",
        )
    return passed("browser.no_token", f"no token or secret in {len(seen)} answer(s)")
