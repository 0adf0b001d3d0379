"""The demo that ``bff demo`` runs: a resource server (``api``, verifying the IdP's access tokens with
``access_tokens``), a framework-free SPA (``spa/``, package data) and the runner that starts the reference IdP
(``bff.devidp``), the API and bff together (``run``, with its subcommands in ``cli``).

Beside the proxy's layers, like ``bff.devidp``: nothing in them imports this package (an import-linter contract);
only ``bff.cli`` and the tests do.
"""
