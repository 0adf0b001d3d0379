"""The IdP's HTML: plain pages, no JavaScript, every interpolated value escaped.

Every page carries the banner, so nobody mistakes this IdP for a real one, and headers that keep it out of
frames and caches (a login form in a frame is a clickjacking target; RFC 6749 10.13).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.responses import HTMLResponse

from bff_devtools.devidp.settings import DemoUser

BANNER = "bff devidp \u2014 DEVELOPMENT identity provider, not for production"

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # No form-action: browsers apply it to the redirect that follows the login form, to the client's origin.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}"
    ".banner{background:#b00020;color:#fff;padding:.6em 1em;font-weight:bold;border-radius:4px}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
    "label{display:block;margin:.6em 0}input[type=text],input[type=password]{width:16em}"
    ".error{color:#b00020}.muted{color:#666}form.inline{display:inline}"
)


def page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    """A page: ``body`` is trusted HTML (built with :func:`escape` from anything that is not)."""
    content = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} - bff devidp</title>"
        f"<style>{_STYLE}</style></head><body><div class=banner>{escape(BANNER)}</div>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(content, status_code=status, headers=_HEADERS)


def error_page(message: str, *, error: str = "invalid_request", status: int = 400) -> HTMLResponse:
    """For a request that must not be redirected (unknown client, unregistered ``redirect_uri``: RFC 6749
    4.1.2.1 says to inform the resource owner, never to redirect)."""
    body = f"<p>{escape(message)}</p><p class=muted><code>error: {escape(error)}</code></p>"
    return page("Request refused", body, status=status)


def message_page(title: str, message: str) -> HTMLResponse:
    return page(title, f"<p>{escape(message)}</p>")


def hidden(name: str, value: str) -> str:
    return f"<input type=hidden name='{escape(name)}' value='{escape(value)}'>"


def login_page(
    *,
    tx: str,
    client_id: str | None,
    demo_users: Sequence[DemoUser],
    changed: Sequence[str] = (),
    error: str | None = None,
    status: int = 200,
    otp: str | None = None,
) -> HTMLResponse:
    """The login form (username and password, no consent step). ``demo_users`` are listed with their demo
    passwords (demo mode only); ``changed`` names those whose password was changed since. ``otp`` not None: the
    client asked for a second factor (``urn:bff:acr:mfa``); the demo code to show, or ``""`` outside demo mode."""
    purpose = f"to continue to <b>{escape(client_id)}</b>" if client_id else "to the admin page"
    parts = [f"<p>Sign in {purpose}.</p>"]
    if error:
        parts.append(f"<p class=error>{escape(error)}</p>")
    parts.append(
        "<form method=post action='/login'>"
        f"{hidden('tx', tx)}"
        "<label>Username <input type=text name=username autocomplete=username required autofocus></label>"
        "<label>Password <input type=password name=password autocomplete=current-password required></label>"
        f"{_otp_field(otp)}<button type=submit>Sign in</button></form>"
    )
    if demo_users:
        rows = "".join(
            f"<tr><td>{escape(u.username)}</td><td><code>{escape(_shown_password(u, changed))}</code></td>"
            f"<td>{escape(u.role)}</td></tr>"
            for u in demo_users
        )
        parts.append(
            "<h2>Demo users</h2><table><tr><th>username</th><th>password</th><th>role</th></tr>"
            f"{rows}</table><p class=muted>Demo mode: these passwords are shown to everyone.</p>"
        )
    return page("Sign in", "".join(parts), status=status)


def _otp_field(otp: str | None) -> str:
    if otp is None:
        return ""
    hint = f" <span class=muted>(demo code: <code>{escape(otp)}</code>)</span>" if otp else ""
    return (
        "<p>This application asks for a second factor.</p>"
        "<label>One-time code <input type=text name=otp inputmode=numeric autocomplete=one-time-code required>"
        f"</label>{hint}"
    )


def _shown_password(user: DemoUser, changed: Sequence[str]) -> str:
    if user.username in changed:
        return "(changed)"
    return user.demo_password or "(not shown)"


def logout_confirm_page(*, username: str, csrf: str) -> HTMLResponse:
    """RP-Initiated Logout 1.0 section 6: without an ``id_token_hint``, ask the user before logging out."""
    body = (
        f"<p>You are signed in as <b>{escape(username)}</b>. Sign out of the identity provider?</p>"
        f"<form method=post action='/end_session'>{hidden('csrf', csrf)}{hidden('confirm', 'yes')}"
        "<button type=submit>Sign out</button></form>"
    )
    return page("Sign out", body)
