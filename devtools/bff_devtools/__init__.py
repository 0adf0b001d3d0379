"""bff's developer tools, a distribution of their own (``bff-devtools``) beside the product:

- ``bff_devtools.devidp``: the reference OpenID Provider (``bff devidp``) the demo and the integration tests use;
- ``bff_devtools.demo``: the demo API, the demo SPA and the one-command demo (``bff demo``, ``bff demo-api``);
- ``dpop_proofs`` (DPoP proof checks) and ``replay`` (the bounded memory of used ``jti`` values), which both use.

The product (``bff``) never imports this package, and its image does not contain it: the commands reach ``bff``'s
command line through entry points of the ``bff.commands`` group, which ``bff`` loads only for the command that runs.
"""
