"""A minimal browser for end-to-end tests: a cookie jar that behaves like Chromium on http://127.0.0.1 (it keeps
``Secure``/``__Host-`` cookies on loopback, which http.cookiejar would not send over http) and manual redirects,
so a test can stop at any hop and look at it."""

from __future__ import annotations

import ssl
from http.cookies import SimpleCookie
from urllib.parse import urljoin, urlsplit

import httpx


class Browser:
    def __init__(self, *, verify: ssl.SSLContext | bool = True) -> None:
        """``verify``: the trust for https servers (a test CA's context), as a browser's certificate store."""
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=10, verify=verify)
        #: host:port -> {cookie name: value}
        self.jar: dict[str, dict[str, str]] = {}
        self.set_cookie_headers: list[str] = []

    async def aclose(self) -> None:
        await self.http.aclose()

    def cookies(self, url: str) -> dict[str, str]:
        return self.jar.setdefault(urlsplit(url).netloc, {})

    def _store(self, url: str, response: httpx.Response) -> None:
        jar = self.cookies(url)
        for header in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(header)
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, content: bytes | None = None
    ) -> httpx.Response:
        jar = self.cookies(url)
        all_headers = dict(headers or {})
        if jar:
            all_headers["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        response = await self.http.request(method, url, headers=all_headers, content=content)
        self._store(url, response)
        return response

    async def get(self, url: str, **kwargs: dict[str, str]) -> httpx.Response:
        return await self.request("GET", url, **kwargs)  # type: ignore[arg-type]

    async def follow(self, url: str, *, max_hops: int = 10) -> list[httpx.Response]:
        """GET ``url`` and follow redirects across origins; returns every response in order."""
        hops: list[httpx.Response] = []
        for _ in range(max_hops):
            response = await self.request("GET", url)
            hops.append(response)
            if response.status_code not in (301, 302, 303, 307, 308):
                return hops
            url = urljoin(url, response.headers["location"])
        raise AssertionError("too many redirects")
