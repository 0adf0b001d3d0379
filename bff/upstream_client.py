"""The data-plane HTTP client: one shared ``aiohttp.ClientSession`` for every proxied request.

The only module that imports aiohttp (issue 6: raw ASGI + aiohttp proxies ~12x the requests of Starlette + httpx on
the same box). It hides aiohttp behind three small types and translates its failures where they enter, in the manner
of httpx's ``map_httpcore_exceptions``:

- connect refused/reset, a broken or garbled answer, a TLS failure  -> ``UpstreamError``   (502 bad_gateway)
- connect or read timeout (the route's ``connect_timeout``/``timeout``) -> ``UpstreamTimeout`` (504)

always ``raise ... from exc``, with fixed messages: aiohttp's own messages can carry the upstream URL (and with it a
query string), so none of their text reaches a response body. Tokens and headers never appear in any message.

The session is a pass-through: ``auto_decompress=False`` (bytes and ``Content-Encoding`` arrive untouched), no cookie
jar (an upstream's ``Set-Cookie`` must never become state shared between users), redirects are never followed (a
3xx is the SPA's business), no automatic ``Accept``/``Accept-Encoding``/``User-Agent``/``Content-Type`` headers, and
TLS verification stays on (a route's private CA becomes a cached ``SSLContext``). URLs are sent exactly as given
(``yarl.URL(..., encoded=True)``): the proxy has already vetted the raw path, and re-quoting or dot-segment
normalisation here would undo that vetting.

The session is created on first use, inside the running event loop (aiohttp binds it to the loop); the owner
closes it with ``aclose()``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from bff.errors import UpstreamError, UpstreamTimeout

#: Headers aiohttp would otherwise invent. A proxy forwards what the browser sent, nothing more: an added
#: ``Accept-Encoding: gzip`` would make the upstream compress an answer the browser never asked to be compressed.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

RequestBody = bytes | AsyncIterable[bytes] | None


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Per-route transport settings, built once per route with :meth:`UpstreamClient.options`."""

    timeout: aiohttp.ClientTimeout
    ssl: ssl.SSLContext | bool


class UpstreamResponse:
    """A streamed upstream answer. Its owner must call :meth:`release` or :meth:`close` (try/finally)."""

    __slots__ = ("_content", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self.status: int = response.status
        #: The header lines exactly as received: original case, order and duplicates.
        self.headers: Sequence[tuple[bytes, bytes]] = response.raw_headers

    async def read_chunk(self) -> bytes:
        """The next bytes the upstream sent, as soon as any arrived; ``b""`` at the end of the body."""
        try:
            return await self._content.readany()
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream stopped sending within the route's timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("the upstream connection broke while sending the body") from exc

    def at_eof(self) -> bool:
        """True once the whole body has been received and read: the last chunk needs no ``more_body``."""
        return self._content.at_eof()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    def release(self) -> None:
        """Done with the answer: its connection returns to the pool if the body was read to the end, else closes."""
        self._response.release()

    def close(self) -> None:
        """Abandon the answer: its connection is closed, never reused."""
        self._response.close()


class UpstreamClient:
    """One keep-alive connection pool for all routes. Create once per process; ``await aclose()`` at shutdown."""

    def __init__(self, *, limit: int = 0, keepalive_timeout: float = 30.0, read_bufsize: int = 2**16) -> None:
        # limit=0: no pool cap of our own. Concurrency is bounded by the server's connection limit, and a cap here
        # would let a few long SSE streams starve every other route (waiting for a slot counts as connect time).
        self._limit = limit
        self._keepalive_timeout = keepalive_timeout
        self._read_bufsize = read_bufsize
        self._session: aiohttp.ClientSession | None = None
        self._ssl_contexts: dict[str, ssl.SSLContext] = {}

    def options(self, *, connect_timeout: float, timeout: float, ca_bundle: str | None = None) -> TransportOptions:
        """Transport settings for one route. ``timeout`` bounds each wait for the upstream (the answer's headers and
        every later read), not the whole exchange, so a long download or an SSE stream that keeps talking lives on."""
        context: ssl.SSLContext | bool = True  # aiohttp's default context: system CAs, hostname checked
        if ca_bundle:
            if ca_bundle not in self._ssl_contexts:  # one context per bundle, shared by the routes that name it
                self._ssl_contexts[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
            context = self._ssl_contexts[ca_bundle]
        client_timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=timeout)
        return TransportOptions(timeout=client_timeout, ssl=context)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=self._keepalive_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                read_bufsize=self._read_bufsize,
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: RequestBody,
        options: TransportOptions,
    ) -> UpstreamResponse:
        """Send one request and return as soon as the answer's headers have arrived; the body streams later.

        ``url`` must already be percent-encoded: it is sent byte for byte. ``body`` is bytes, an async iterable
        (sent chunked unless ``headers`` carries a Content-Length) or None.
        """
        try:
            response = await self._get_session().request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=options.timeout,
                ssl=options.ssl,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer within the route's timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("the upstream could not be reached or broke the connection") from exc
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            # Let TLS transports finish closing before the loop goes away (aiohttp's "graceful shutdown" advice).
            await asyncio.sleep(0)
