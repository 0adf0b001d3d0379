"""``[tokens]`` (refresh and replay) and ``[frontend]`` (where the SPA comes from)."""

from __future__ import annotations

from pathlib import Path

from bff.config.reader import Reader, check_url, parse_duration, parse_size, table
from bff.config.settings import FrontendSettings, TokenSettings


def read_tokens(root: Reader, oidc_timeout: float) -> TokenSettings:
    r = table(root, "tokens", TokenSettings)
    leeway = r.converted("refresh_leeway", parse_duration)
    lease = r.converted("refresh_lock_lease", parse_duration)
    refresh_timeout = r.converted("refresh_timeout", parse_duration, max(r.default("refresh_timeout"), oidc_timeout))
    replay = r.converted("replay_limit", parse_size)
    if lease < 0.1:
        r.problem("refresh_lock_lease", "must be at least 100ms")
    if refresh_timeout < oidc_timeout:
        # A refresh cut short before the request's own deadline would leave its outcome unknown for nothing.
        r.problem("refresh_timeout", "must be at least oidc.timeout")
    if refresh_timeout > 600:
        r.problem("refresh_timeout", "must not exceed 10m (the session's refresh lock is held that long)")
    if replay > 10 * 1024 * 1024:
        r.problem("replay_limit", "must not exceed 10MiB (replayable bodies are held in memory)")
    r.finish()
    return TokenSettings(
        refresh_leeway=leeway, refresh_lock_lease=lease, refresh_timeout=refresh_timeout, replay_limit=replay
    )


def read_frontend(root: Reader) -> FrontendSettings | None:
    if "frontend" not in root.data:
        root.seen.add("frontend")
        return None
    r = table(root, "frontend", FrontendSettings)
    directory = r.optional("directory")
    dev_server = r.optional("dev_server")
    if directory and dev_server:
        r.problem("directory", "set either directory or dev_server, not both")
    if directory and not Path(directory).is_dir():
        r.problem("directory", "directory not found")
    if dev_server:
        check_url(r, "dev_server", dev_server)
    r.finish()
    return FrontendSettings(directory=directory, dev_server=dev_server)
