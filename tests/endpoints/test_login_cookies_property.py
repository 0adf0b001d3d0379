"""A property of the pending logins of one browser, over any sequence of starts, callbacks (replays included) and
waits: what the browser holds stays within the cap and the budget, a callback succeeds exactly when a model of
"the newest live pending logins, each used once" says so, and the store holds nothing but the one-time markers of
the callbacks that succeeded.

The browser is modelled as a cookie jar that applies ``Set-Cookie`` as browsers do (``Max-Age=0`` deletes, a cookie
is gone once its ``Max-Age`` has passed); the endpoints' cookie and store logic runs for real (``LoginCookies``,
``SessionManager`` on the memory store), on a fake clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response

from bff.endpoints.login import LOGIN_COOKIES_BUDGET, LoginCookies
from bff.errors import InvalidState
from bff.models import LoginState
from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from tests.support.clock import FakeClock
from tests.support.configs import base_document, make_config

MAX_PENDING = 3
TIMEOUT = 600.0

Op = tuple[str, int]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from([0, 10, 900, 2047])),  # the length of returnTo
        st.tuples(st.just("finish"), st.integers(0, 50)),  # which started login (any: replays too)
        st.tuples(st.just("wait"), st.integers(1, 400)),  # seconds
    ),
    max_size=30,
)


@dataclass
class Jar:
    clock: FakeClock
    cookies: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (value, expires at)

    def header(self) -> list[tuple[bytes, bytes]]:
        now = self.clock()
        live = {k: v for k, (v, until) in self.cookies.items() if now < until}
        self.cookies = {k: self.cookies[k] for k in live}
        return [(b"cookie", "; ".join(f"{k}={v}" for k, v in live.items()).encode())] if live else []

    def apply(self, response: Response) -> None:
        for header in response.headers.getlist("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = (morsel.value, self.clock() + int(morsel["max-age"]))


def request(jar: Jar, query: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": urlencode(query).encode(),
            "headers": jar.header(),
        }
    )


async def run(ops: list[Op]) -> None:
    clock = FakeClock()
    doc = base_document()
    doc["session"]["max_pending_logins"] = MAX_PENDING
    doc["session"]["login_timeout"] = f"{int(TIMEOUT)}s"
    config = make_config(doc)
    store = MemoryStore(clock=clock)
    sessions = SessionManager(store, config.session, clock=clock)
    logins = LoginCookies(config, sessions, clock)
    jar = Jar(clock)

    def size(login: LoginState) -> int:
        name = logins.name_for(login.state)
        return len(name) + len(sessions.logins.seal(login, name))

    started: list[LoginState] = []
    model: list[LoginState] = []  # the logins that should still complete, oldest first
    successes = 0
    for op, arg in ops:
        if op == "wait":
            clock.advance(arg)
        elif op == "start":
            clock.advance(0.001)  # the oldest is the one started first (ties are not ordered)
            login = LoginState(
                state=f"state-{len(started)}",
                nonce="n",
                code_verifier="v" * 43,
                return_to="/" + "r" * arg,
                created_at=clock(),
            )
            response = Response()
            logins.issue(request(jar, {}), response, login)
            jar.apply(response)
            started.append(login)
            # Newest first, the live ones are kept while both the cap and the size budget allow.
            budget = LOGIN_COOKIES_BUDGET - size(login)
            kept: list[LoginState] = []
            for m in reversed(model):
                if clock() < m.created_at + TIMEOUT and len(kept) < MAX_PENDING - 1 and size(m) <= budget:
                    kept.insert(0, m)
                    budget -= size(m)
            model = [*kept, login]
        elif started:
            login = started[arg % len(started)]
            req = request(jar, {"state": login.state})
            expected = login in model and clock() < login.created_at + TIMEOUT
            try:
                taken = logins.read(req, login.state)
                succeeded = await sessions.logins.consume(taken)
            except InvalidState:
                succeeded = False
            response = Response()
            logins.clear(req, response)  # every outcome
            jar.apply(response)
            if login in model:
                model.remove(login)
            if succeeded:
                successes += 1
            assert succeeded == expected, (op, arg, login.state)
        held = [k for k in jar.cookies if k.startswith(logins.prefix)]
        assert len(held) <= MAX_PENDING
        assert sum(len(k) + len(v) for k, (v, _) in jar.cookies.items()) <= LOGIN_COOKIES_BUDGET
        assert len(store._entries) <= successes  # one-time markers only, nothing per started login


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_pending_logins_follow_the_model(ops: list[Op]) -> None:
    asyncio.run(asyncio.wait_for(run(ops), 10))
