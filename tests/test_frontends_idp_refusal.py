"""A frontend whose IdP cannot serve its ``[oidc]`` (``par = "required"`` against an IdP without PAR) stops the
start, and the refusal names that frontend's table, not a bare ``oidc``."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from bff.config import parse_config
from bff.errors import ConfigError
from bff.frontends import FrontendsApp
from tests.support.devidp import running_devidp
from tests.test_config_frontends import entry, multi_document

PROBLEM = "frontends['b'].oidc: the IdP's metadata has no pushed_authorization_request_endpoint (PAR, RFC 9126)"


async def test_the_refusal_names_the_frontend(tmp_path: Path) -> None:
    with running_devidp(tmp_path / "a") as good, running_devidp(tmp_path / "b", par=False) as without_par:
        doc = multi_document(entry("a", "https://a.example.com"), entry("b", "https://b.example.com"))
        doc["frontends"][0]["oidc"]["issuer"] = good.url
        doc["frontends"][1]["oidc"].update(issuer=without_par.url, par="required")
        app = FrontendsApp(parse_config(copy.deepcopy(doc), env={}))
        with pytest.raises(ConfigError) as caught:
            async with app.lifespan():
                pass
        assert [p[: len(PROBLEM)] for p in caught.value.problems] == [PROBLEM]
        assert app.refused is caught.value
