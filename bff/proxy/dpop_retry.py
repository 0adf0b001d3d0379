"""DPoP on the proxy's routes (RFC 9449): the proof and authorization headers, and the ``use_dpop_nonce`` replay.

The :class:`~bff.proxy.asgi.Proxy` calls this only on a DPoP route (``Route.dpop``) that carries a token; a plain
route never reaches it. bff's key and the nonces servers hand it live behind the ``ProofMaker`` seam
(``bff.oidc.dpop.DPoPProver``, composed in the app); this module decides when a proof is signed and when a request
is replayed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from bff.proxy.challenges import dpop_challenge_error
from bff.proxy.headers import header_value
from bff.proxy.request_body import RequestBodyReader, replayable_body
from bff.upstream import RequestBody, UpstreamResponse

#: Sends the request again with this body: the upstream's answer, or None once the browser has been answered.
Resend = Callable[[RequestBody], Awaitable[UpstreamResponse | None]]


class ProofMaker(Protocol):
    """The seam to bff's DPoP key (``bff.oidc.dpop.DPoPProver``, composed in the app): proofs and nonces."""

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None) -> str: ...

    def remember_nonce(self, url: str, value: str | bytes | None) -> str | None: ...


class DPoPRetry:
    """A DPoP route's authorization headers and its one replay after a ``use_dpop_nonce`` challenge."""

    __slots__ = ("_prover",)

    def __init__(self, prover: ProofMaker) -> None:
        self._prover = prover

    def headers(self, method: str, url: str, token: str) -> list[tuple[str, str]]:
        """A fresh proof bound to ``token`` (RFC 9449 4.2 ``ath``) and the DPoP authorization (7.1), in this order."""
        return [("dpop", self._prover.proof(method, url, access_token=token)), ("authorization", "DPoP " + token)]

    def challenged(self, url: str, response: UpstreamResponse) -> bool:
        """Keep the upstream's ``DPoP-Nonce``; True after a ``use_dpop_nonce`` challenge with one (RFC 9449 9)."""
        kept = self._prover.remember_nonce(url, header_value(response.headers, b"dpop-nonce"))
        return (
            response.status == 401 and kept is not None and dpop_challenge_error(response.headers) == b"use_dpop_nonce"
        )

    async def replay(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        reader: RequestBodyReader | None,
        response: UpstreamResponse,
        resend: Resend,
    ) -> tuple[UpstreamResponse | None, RequestBody]:
        """After :meth:`challenged`, replay once with the nonce kept, if the body allows it (RFC 9449 9).

        ``headers`` end with this class's two headers, replaced in place for the replay. Returns the answer to relay
        and the body a later replay may send."""
        replayable, replay = replayable_body(body, reader)
        if not replayable:
            return response, body
        response.release()
        token = headers[-1][1].removeprefix("DPoP ")
        headers[-2:] = self.headers(method, url, token)
        fresh = await resend(replay)
        if fresh is not None:
            self._prover.remember_nonce(url, header_value(fresh.headers, b"dpop-nonce"))
        return fresh, replay
