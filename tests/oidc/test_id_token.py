"""ID token (Core 3.1.3.7) and logout token (Back-Channel Logout 2.6) validation against TestProvider's tokens."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bff.errors import InvalidIdToken, InvalidLogoutToken
from bff.oidc.id_token import BACKCHANNEL_LOGOUT_EVENT, validate_id_token, validate_logout_token
from bff.oidc.jwks import JwksCache, TokenSource
from bff.types import JSONObject
from tests.oidc.conftest import CLIENT_ID, ISSUER, T0
from tests.support.clock import FakeClock
from tests.support.oidc_provider import REMOVE, IdTokenMode, TestProvider

NONCE = "nonce-0123456789abcdef"
LEEWAY = 60.0
ALGS = ("RS256", "ES256")


async def validate(
    token: str,
    jwks: JwksCache,
    clock: FakeClock,
    *,
    nonce: str | None = NONCE,
    algorithms: tuple[str, ...] = ALGS,
    access_token: str | None = None,
    trusted_audiences: tuple[str, ...] = (),
) -> JSONObject:
    return await validate_id_token(
        token, jwks=jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce=nonce, algorithms=algorithms, clock=clock,
        leeway=LEEWAY, access_token=access_token, trusted_audiences=trusted_audiences,
        source=TokenSource.TOKEN_ENDPOINT,
    )  # fmt: skip


async def refused(token: str, jwks: JwksCache, clock: FakeClock, **kwargs: Any) -> str:
    """Validate ``token``, expect InvalidIdToken, and return its message (checked not to leak the token)."""
    with pytest.raises(InvalidIdToken) as info:
        await validate(token, jwks, clock, **kwargs)
    assert all(part not in str(info.value) for part in token.split(".") if len(part) > 8)
    return info.value.message


# --- happy paths ------------------------------------------------------------------------------------------------


async def test_valid_rs256_id_token(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    claims = await validate(provider.mint_id_token(nonce=NONCE), jwks, clock)
    assert claims["sub"] == "alice-0001"
    assert claims["email"] == "alice@example.com"
    assert claims["nonce"] == NONCE


async def test_valid_es256_id_token(clock: FakeClock) -> None:
    provider = TestProvider(alg="ES256", issuer=ISSUER, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app)) as http:
        jwks = JwksCache(http, f"{ISSUER}/jwks", clock=clock)
        claims = await validate(provider.mint_id_token(user="bob", nonce=NONCE), jwks, clock)
    assert claims["sub"] == "bob-0002"
    assert provider.signing_key.key_type == "EC"


async def test_expiry_within_leeway_is_accepted(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    provider.id_token_claims_override = {"exp": T0 - LEEWAY + 1, "iat": T0 + LEEWAY - 1}
    assert (await validate(provider.mint_id_token(nonce=NONCE), jwks, clock))["sub"] == "alice-0001"


async def test_multiple_trusted_audiences_with_our_azp_are_accepted(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    provider.id_token_claims_override = {"aud": [CLIENT_ID, "other-client"], "azp": CLIENT_ID}
    token = provider.mint_id_token(nonce=NONCE)
    assert (await validate(token, jwks, clock, trusted_audiences=("other-client",)))["azp"] == CLIENT_ID


async def test_refresh_id_token_without_nonce_is_accepted_when_no_nonce_is_expected(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    claims = await validate(provider.mint_id_token(), jwks, clock, nonce=None)
    assert "nonce" not in claims


async def test_token_without_kid_uses_the_single_fitting_key(
    provider: TestProvider, jwks: JwksCache, idp_http: httpx.AsyncClient, clock: FakeClock
) -> None:
    claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice-0001", "iat": T0, "exp": T0 + 60, "nonce": NONCE}
    token = jwt.encode({"alg": "RS256"}, claims, provider.signing_key, algorithms=["RS256"])
    assert (await validate(token, jwks, clock))["sub"] == "alice-0001"
    provider.rotate_key()
    jwks_after_rotation = JwksCache(idp_http, jwks.jwks_uri, clock=clock)
    assert await refused(token, jwks_after_rotation, clock) == "token has no kid and several signing keys fit"


# --- forged tokens ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("bad_signature", "id_token signature is invalid"),
        ("alg_none", "id_token alg 'none' is refused (only asymmetric signatures are accepted)"),
        ("hs256_with_public_key", "id_token alg 'HS256' is refused (only asymmetric signatures are accepted)"),
        # The attacker's key sits in the header; bff verifies with the JWKS key of that kid, and fails.
        ("header_jwk", "id_token signature is invalid"),
        ("unknown_kid", "unknown signing key"),
    ],
)
async def test_forged_id_token_is_refused(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, mode: IdTokenMode, message: str
) -> None:
    provider.id_token_mode = mode
    assert await refused(provider.mint_id_token(nonce=NONCE), jwks, clock) == message


@pytest.mark.parametrize("mode", ["alg_none", "hs256_with_public_key"])
async def test_none_and_hmac_are_refused_even_when_configured(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, mode: IdTokenMode
) -> None:
    provider.id_token_mode = mode
    message = await refused(provider.mint_id_token(nonce=NONCE), jwks, clock, algorithms=("RS256", "HS256", "none"))
    assert message.endswith("is refused (only asymmetric signatures are accepted)")


async def test_alg_outside_the_allow_list_is_refused(clock: FakeClock) -> None:
    provider = TestProvider(alg="ES256", issuer=ISSUER, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app)) as http:
        jwks = JwksCache(http, f"{ISSUER}/jwks", clock=clock)
        token = provider.mint_id_token(nonce=NONCE)
        assert await refused(token, jwks, clock, algorithms=("RS256",)) == "id_token alg 'ES256' is not allowed"


async def test_alg_that_does_not_match_the_kid_key_type_is_refused(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    # An EC signature claiming the kid of the IdP's RSA key.
    claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice-0001", "iat": T0, "exp": T0 + 60, "nonce": NONCE}
    header = {"alg": "ES256", "kid": provider.signing_key.kid}
    token = jwt.encode(header, claims, ECKey.generate_key("P-256"), algorithms=["ES256"])
    assert await refused(token, jwks, clock) == "signing key does not match the token's alg"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not-a-jwt", "id_token is malformed"),
        ("a.b.c", "id_token is malformed"),
        ("a.b.c.d.e", "id_token is encrypted (JWE is not supported)"),
    ],
)
async def test_malformed_id_token_is_refused(jwks: JwksCache, clock: FakeClock, token: str, message: str) -> None:
    assert await refused(token, jwks, clock) == message


async def test_id_token_typed_as_access_token_is_refused(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice-0001", "iat": T0, "exp": T0 + 60, "nonce": NONCE}
    assert await refused(provider.sign(claims, typ="at+jwt"), jwks, clock) == "id_token typ is not an ID token"


# --- claims -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"iss": "https://evil.test"}, "id_token issuer mismatch"),
        ({"iss": ISSUER + "/"}, "id_token issuer mismatch"),
        ({"aud": "other-client"}, "id_token audience mismatch"),
        ({"aud": ["other-client", "third"]}, "id_token audience mismatch"),
        ({"aud": REMOVE}, "id_token aud missing or malformed"),
        ({"aud": [CLIENT_ID, "other-client"]}, "id_token aud lists an audience the client does not trust"),
        (
            {"aud": [CLIENT_ID, "other-client"], "azp": CLIENT_ID},
            "id_token aud lists an audience the client does not trust",
        ),
        ({"aud": [CLIENT_ID, "trusted-api"]}, "id_token azp missing with multiple audiences"),
        ({"aud": [CLIENT_ID, "trusted-api"], "azp": "trusted-api"}, "id_token azp mismatch"),
        ({"azp": "other-client"}, "id_token azp mismatch"),
        ({"nonce": "wrong-nonce"}, "id_token nonce mismatch"),
        ({"nonce": REMOVE}, "id_token nonce missing"),
        ({"exp": T0 - LEEWAY}, "id_token expired"),
        ({"exp": REMOVE}, "id_token exp missing"),
        ({"exp": "tomorrow"}, "id_token exp is not a number"),
        ({"exp": True}, "id_token exp is not a number"),
        ({"iat": T0 + LEEWAY + 1}, "id_token iat is in the future"),
        ({"iat": REMOVE}, "id_token iat missing"),
        ({"nbf": T0 + LEEWAY + 1}, "id_token not yet valid (nbf)"),
        ({"sub": REMOVE}, "id_token sub missing"),
        ({"sub": ""}, "id_token sub missing"),
        ({"sub": 42}, "id_token sub missing"),
        ({"sub": "x" * 256}, "id_token sub is not a valid subject identifier"),
    ],
)
async def test_id_token_claim_check_fails(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, override: dict[str, Any], message: str
) -> None:
    provider.id_token_claims_override = override
    token = provider.mint_id_token(nonce=NONCE)
    assert await refused(token, jwks, clock, trusted_audiences=("trusted-api",)) == message


async def test_id_token_expires_with_the_clock(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    token = provider.mint_id_token(nonce=NONCE)  # exp = T0 + 300
    await validate(token, jwks, clock)
    clock.advance(300 + LEEWAY)
    assert await refused(token, jwks, clock) == "id_token expired"


# --- at_hash (Core 3.1.3.8, 3.2.2.9) ----------------------------------------------------------------------------

ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiJ9.an-access-token.signature-part"


def half_hash(value: str, digest: str) -> str:
    """Written from the spec, apart from bff's: base64url of the left half of the hash of the ASCII octets."""
    raw = (
        hashlib.shake_256(value.encode()).digest(114)
        if digest == "shake256"
        else hashlib.new(digest, value.encode()).digest()
    )
    return base64.urlsafe_b64encode(raw[: len(raw) // 2]).rstrip(b"=").decode()


def keyed_jwks(key: Key, clock: FakeClock) -> tuple[JwksCache, httpx.AsyncClient]:
    """A JwksCache on a JWKS that publishes only ``key``."""
    body = {"keys": [key.as_dict(private=False)]}
    app = Starlette(routes=[Route("/jwks", lambda request: JSONResponse(body))])
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    return JwksCache(http, f"{ISSUER}/jwks", clock=clock), http


@pytest.mark.parametrize(
    ("alg", "key", "digest"),
    [
        ("RS256", lambda: RSAKey.generate_key(2048, auto_kid=True), "sha256"),
        ("PS384", lambda: RSAKey.generate_key(2048, auto_kid=True), "sha384"),
        ("RS512", lambda: RSAKey.generate_key(2048, auto_kid=True), "sha512"),
        ("ES256", lambda: ECKey.generate_key("P-256", auto_kid=True), "sha256"),
        ("ES384", lambda: ECKey.generate_key("P-384", auto_kid=True), "sha384"),
        ("ES512", lambda: ECKey.generate_key("P-521", auto_kid=True), "sha512"),
        ("EdDSA", lambda: OKPKey.generate_key("Ed25519", auto_kid=True), "sha512"),
        ("EdDSA", lambda: OKPKey.generate_key("Ed448", auto_kid=True), "shake256"),
    ],
)
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's note on RFC 9864; IdPs still sign with it
async def test_at_hash_uses_the_hash_of_the_signature_alg(
    clock: FakeClock, alg: str, key: Callable[[], Key], digest: str
) -> None:
    signing = key()
    jwks, http = keyed_jwks(signing, clock)
    base = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice-0001", "iat": T0, "exp": T0 + 60, "nonce": NONCE}

    def token(at_hash: str) -> str:
        return jwt.encode({"alg": alg, "kid": signing.kid}, {**base, "at_hash": at_hash}, signing, algorithms=[alg])

    async with http:
        good = half_hash(ACCESS_TOKEN, digest)
        claims = await validate(token(good), jwks, clock, access_token=ACCESS_TOKEN, algorithms=(alg,))
        assert claims["at_hash"] == good
        # The same half hash of another access token, and the right hash with the wrong algorithm, are refused.
        wrong = half_hash(ACCESS_TOKEN + "x", digest)
        other = half_hash(ACCESS_TOKEN, "sha384" if digest == "sha256" else "sha256")
        for bad in (wrong, other, good[:-1], good + "A"):
            message = await refused(token(bad), jwks, clock, access_token=ACCESS_TOKEN, algorithms=(alg,))
            assert message == "id_token at_hash does not match the access token"


async def test_at_hash_mismatch_is_refused(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    provider.id_token_claims_override = {"at_hash": half_hash("another-access-token", "sha256")}
    message = await refused(provider.mint_id_token(nonce=NONCE), jwks, clock, access_token=ACCESS_TOKEN)
    assert message == "id_token at_hash does not match the access token"


async def test_matching_at_hash_is_accepted(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    provider.id_token_claims_override = {"at_hash": half_hash(ACCESS_TOKEN, "sha256")}
    claims = await validate(provider.mint_id_token(nonce=NONCE), jwks, clock, access_token=ACCESS_TOKEN)
    assert claims["sub"] == "alice-0001"


async def test_absent_at_hash_is_accepted(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    claims = await validate(provider.mint_id_token(nonce=NONCE), jwks, clock, access_token=ACCESS_TOKEN)
    assert "at_hash" not in claims


@pytest.mark.parametrize(
    ("at_hash", "access_token", "message"),
    [
        (42, ACCESS_TOKEN, "id_token at_hash is not a string"),
        (half_hash(ACCESS_TOKEN, "sha256"), None, "id_token has an at_hash but the token answer has no access token"),
        (half_hash("t\u00f6ken", "sha256"), "t\u00f6ken", "id_token at_hash cannot bind a non-ASCII access token"),
    ],
)
async def test_unusable_at_hash_is_refused(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, at_hash: object, access_token: str | None, message: str
) -> None:
    provider.id_token_claims_override = {"at_hash": at_hash}
    token = provider.mint_id_token(nonce=NONCE)
    assert await refused(token, jwks, clock, access_token=access_token) == message


# --- logout tokens ----------------------------------------------------------------------------------------------


async def validate_logout(
    token: str, jwks: JwksCache, clock: FakeClock, *, trusted_audiences: tuple[str, ...] = ()
) -> JSONObject:
    return await validate_logout_token(
        token, jwks=jwks, issuer=ISSUER, client_id=CLIENT_ID, algorithms=ALGS, clock=clock, leeway=LEEWAY,
        trusted_audiences=trusted_audiences,
    )  # fmt: skip


async def test_logout_token_with_an_untrusted_extra_audience_is_refused(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    token = provider.mint_logout_token(sid="s", claims_override={"aud": [CLIENT_ID, "other-client"], "azp": CLIENT_ID})
    with pytest.raises(InvalidLogoutToken) as info:
        await validate_logout(token, jwks, clock, trusted_audiences=("trusted-api",))
    assert info.value.message == "logout_token aud lists an audience the client does not trust"
    assert "'other-client', which is not in oidc.trusted_audiences" in caplog.text  # the operator learns which
    # Listed in trusted_audiences, the same extra audience is fine.
    assert (await validate_logout(token, jwks, clock, trusted_audiences=("other-client",)))["sid"] == "s"


async def test_valid_logout_token(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    claims = await validate_logout(provider.mint_logout_token(sid="sid-1"), jwks, clock)
    assert claims["sid"] == "sid-1"
    assert claims["sub"] == "alice-0001"
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}


@pytest.mark.parametrize("typ", ["JWT", "logout+jwt", "application/logout+jwt"])
async def test_logout_token_typ_variants_are_accepted(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, typ: str
) -> None:
    assert (await validate_logout(provider.mint_logout_token(sid="s", typ=typ), jwks, clock))["sid"] == "s"


async def test_logout_token_with_sid_only_is_accepted(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    token = provider.mint_logout_token(sid="sid-2", claims_override={"sub": REMOVE})
    assert "sub" not in await validate_logout(token, jwks, clock)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"nonce": "n"}, "logout_token contains a nonce"),
        ({"events": REMOVE}, "logout_token events missing or not a JSON object"),
        ({"events": [BACKCHANNEL_LOGOUT_EVENT]}, "logout_token events missing or not a JSON object"),
        ({"events": {"https://example.com/other": {}}}, "logout_token events lacks the back-channel logout event"),
        ({"events": {BACKCHANNEL_LOGOUT_EVENT: "yes"}}, "logout_token events lacks the back-channel logout event"),
        ({"sub": REMOVE}, "logout_token has neither sid nor sub"),
        ({"sub": 7, "sid": "s"}, "logout_token sid or sub is not a string"),
        ({"aud": "other-client"}, "logout_token audience mismatch"),
        ({"iss": "https://evil.test"}, "logout_token issuer mismatch"),
        ({"jti": REMOVE}, "logout_token jti missing"),
        ({"iat": REMOVE}, "logout_token iat missing"),
        ({"exp": T0 - LEEWAY}, "logout_token expired"),
        ({"exp": REMOVE, "iat": T0 - 300 - LEEWAY - 1}, "logout_token is too old"),
    ],
)  # fmt: skip
async def test_logout_token_check_fails(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, override: dict[str, Any], message: str
) -> None:
    token = provider.mint_logout_token(claims_override=override)  # no sid: sub only, unless overridden
    with pytest.raises(InvalidLogoutToken) as info:
        await validate_logout(token, jwks, clock)
    assert info.value.message == message


@pytest.mark.parametrize(
    ("mode", "typ", "message"),
    [
        ("alg_none", "logout+jwt", "logout_token alg 'none' is refused (only asymmetric signatures are accepted)"),
        ("bad_signature", "logout+jwt", "logout_token signature is invalid"),
        ("unknown_kid", "logout+jwt", "logout_token: unknown signing key"),
        ("good", "at+jwt", "logout_token typ is not logout+jwt"),
    ],
)
async def test_forged_logout_token_is_refused(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock, mode: IdTokenMode, typ: str, message: str
) -> None:
    with pytest.raises(InvalidLogoutToken) as info:
        await validate_logout(provider.mint_logout_token(sid="s", mode=mode, typ=typ), jwks, clock)
    assert info.value.message == message


async def test_id_token_is_not_accepted_as_logout_token(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    with pytest.raises(InvalidLogoutToken):
        await validate_logout(provider.mint_id_token(nonce=NONCE), jwks, clock)
