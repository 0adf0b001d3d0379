"""The demo that ``bff demo`` runs: a resource server (``api``, verifying the IdP's access tokens with
``access_tokens``), a framework-free SPA (``spa/``, package data) and the runner that starts the reference IdP
(``bff_devtools.devidp``), the API and bff together (``run``, with its subcommands in ``cli``).

Beside the proxy's layers, like ``bff_devtools.devidp``: nothing in ``bff`` imports this package (an import-linter
contract); ``bff demo`` and ``bff demo-api`` reach it through ``bff.commands`` entry points, and the tests import it.
"""
