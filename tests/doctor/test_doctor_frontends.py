"""``bff doctor`` with ``[[frontends]]``: one run checks every frontend (each finding names its frontend), the
session store they share once, and ``--frontend`` narrows it. Real servers on loopback: the reference IdP with one
client per frontend, Redis, and bff's ``FrontendsApp`` serving both frontends under path prefixes of one origin."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bff.cli import main
from bff.config import load_config
from bff.doctor import Check, run_doctor
from bff.doctor.report import is_ok, render_table
from bff.frontends import FrontendsApp
from tests.support.configs import SESSION_KEY
from tests.support.devidp import IdP, client, running_devidp
from tests.support.servers import serve
from tests.support.stack import bound_socket

pytestmark = pytest.mark.redis

NAMES = ("shop", "admin")
SECRETS = {name: f"{name}-client-secret-0123456789-abcdef" for name in NAMES}
WRONG = "a-wrong-client-secret-0123456789-abcdef"


@dataclasses.dataclass(frozen=True)
class World:
    idp: IdP
    origin: str
    tmp: Path
    redis_url: str

    def write(self, *, store: str, admin_secret: str) -> Path:
        """A ``[[frontends]]`` config: shop and admin under ``/shop`` and ``/admin`` of one origin."""
        entries = ""
        for name in NAMES:
            secret = admin_secret if name == "admin" else SECRETS[name]
            entries += f"""
[[frontends]]
name = "{name}"
path_prefix = "/{name}"
public_origin = "{self.origin}"
cookie_name = "__Host-{name}"
[frontends.oidc]
issuer = "{self.idp.url}"
client_id = "{name}-bff"
client_secret = "{secret}"
"""
        path = self.tmp / f"bff-{len(list(self.tmp.iterdir()))}.toml"
        shared = f'[server]\nlisten = "127.0.0.1:8000"\n[session]\nstore = "{store}"\nkeys = ["{SESSION_KEY}"]\n'
        path.write_text(shared + entries)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("frontends")
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    clients = tuple(
        client(
            f"{name}-bff",
            SECRETS[name],
            redirect_uri=f"{origin}/{name}/bff/callback",
            post_logout_redirect_uri=f"{origin}/{name}/",
        )
        for name in NAMES
    )
    with running_devidp(tmp / "idp", clients) as idp:
        configs = tmp / "configs"
        configs.mkdir()
        world = World(idp, origin, configs, redis_url)
        bff = FrontendsApp(load_config(world.write(store=redis_url, admin_secret=SECRETS["admin"]), env={}))
        with serve(bff, sock=sock):
            yield world


def by_frontend(checks: list[Check]) -> dict[tuple[str | None, str], Check]:
    keys = [(c.frontend, c.id) for c in checks]
    assert len(keys) == len(set(keys)), f"duplicate checks: {keys}"
    return dict(zip(keys, checks, strict=True))


async def test_every_frontend_is_checked_and_the_store_once(world: World) -> None:
    config = load_config(world.write(store=world.redis_url, admin_secret=SECRETS["admin"]), env={})
    checks = await run_doctor(config, url=world.origin)
    found = by_frontend(checks)
    assert {c.frontend for c in checks} == {"shop", "admin", None}
    assert {c.group for c in checks if c.frontend is None} == {"redis"}
    assert "redis" not in {c.group for c in checks if c.frontend is not None}
    for name in NAMES:
        for check_id in ("idp.discovery.issuer", "client.redirect_uri", "client.credentials", "browser.login"):
            assert found[(name, check_id)].status == "PASS", found[(name, check_id)]
        assert found[(name, "browser.reachable")].message.startswith(f"{world.origin}/{name}/ answered")
        assert found[(name, "browser.origin")].status == "PASS"  # --url is the frontend's public_origin
    assert found[(None, "redis.reachable")].status == "PASS"
    assert [c.id for c in checks if c.frontend == "shop"] == [c.id for c in checks if c.frontend == "admin"]


async def test_one_frontends_failure_fails_the_run_and_names_it(world: World) -> None:
    config = load_config(world.write(store="memory://", admin_secret=WRONG), env={})
    checks = await run_doctor(config)
    found = by_frontend(checks)
    assert found[("admin", "client.credentials")].status == "FAIL"
    assert found[("shop", "client.credentials")].status == "PASS"
    assert found[("shop", "browser.url")].status == "SKIP"
    assert not is_ok(checks)
    table = render_table(checks)
    assert "FAIL  admin  client.credentials" in table
    assert "SKIP  *      redis.reachable" in table  # the store is shared: checked once, for no one frontend
    printed = json.dumps([c.to_json() for c in checks]) + table
    assert all(secret not in printed for secret in (WRONG, *SECRETS.values(), SESSION_KEY))


async def test_a_url_of_another_origin_skips_the_frontends_not_served_there(world: World) -> None:
    config = load_config(world.write(store="memory://", admin_secret=SECRETS["admin"]), env={})
    other = "http://127.0.0.1:9"
    checks = by_frontend(await run_doctor(config, url=other))
    for name in NAMES:
        skip = checks[(name, "browser.url")]
        assert skip.status == "SKIP"
        assert f"--frontend {name} --url {world.origin}" in skip.message


def test_the_command_line_checks_every_frontend_and_frontend_narrows(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(world.write(store="memory://", admin_secret=WRONG))
    every = main(["doctor", "--config", path, "--json", "--timeout", "3"])
    document = json.loads(capsys.readouterr().out)
    shop = main(["doctor", "--config", path, "--json", "--frontend", "shop", "--timeout", "3"])
    narrowed = json.loads(capsys.readouterr().out)
    unknown = main(["doctor", "--config", path, "--frontend", "nope"])
    error = capsys.readouterr().err
    assert (every, document["ok"], shop, narrowed["ok"], unknown) == (1, False, 0, True, 2)
    assert {c["frontend"] for c in document["checks"]} == {"shop", "admin", None}
    failing = {(c["frontend"], c["id"]) for c in document["checks"] if c["status"] == "FAIL"}
    assert failing == {("admin", "client.credentials"), ("admin", "client.par")}
    assert {c["frontend"] for c in narrowed["checks"]} == {"shop", None}
    assert "no frontend 'nope' (one of: shop, admin)" in error
    assert WRONG not in json.dumps(document)
