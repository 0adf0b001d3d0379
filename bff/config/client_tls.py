"""``client_cert``, ``client_key`` and ``client_key_password``: a client certificate for mutual TLS (RFC 8705),
read the same way in ``[oidc]`` and in each ``[[routes]]``.

Only what the standard library can tell is checked here (both files given, both present); whether the key opens
with its passphrase, matches the certificate and the certificate is still valid is checked by
``bff.client_tls.check_client_certificates`` at ``bff check`` and at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from bff.config.reader import Reader, existing_file
from bff.config.settings import RouteSettings
from bff.config.values import Secret


@dataclass(frozen=True)
class ClientCertKeys:
    cert: str | None
    key: str | None
    password: Secret | None


def read_client_cert(r: Reader) -> ClientCertKeys:
    cert = existing_file(r, "client_cert")
    key = existing_file(r, "client_key")
    # Never quoted in a problem: it is a passphrase.
    password = r.get("client_key_password", str, "")
    if cert and not key:
        r.problem("client_key", "is required with client_cert (the PEM private key of that certificate)")
    elif key and not cert:
        r.problem("client_cert", "is required with client_key (the PEM certificate of that key)")
    if password and not key:
        r.problem("client_key_password", "is set but there is no client_key to open with it")
    return ClientCertKeys(cert, key, Secret(password) if password else None)


def check_bound_routes(root: Reader, oidc_cert: str | None, routes: tuple[RouteSettings, ...]) -> None:
    """A route that wants certificate-bound tokens needs the IdP connection to present a certificate at all."""
    if oidc_cert:
        return
    for index, route in enumerate(routes):
        if route.certificate_bound:
            root.problem(
                f"routes[{index}].certificate_bound",
                "needs [oidc] client_cert and client_key: the IdP binds the token to that certificate (RFC 8705 3)",
            )
