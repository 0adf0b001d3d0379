"""Session accounting: sessions created, sessions ended by reason, and the per-request ``get_and_touch``.

A session is counted as ended where bff deletes a record it found (``end_record``), so it ends once however many
requests race to end it. ``get_and_touch`` is metered inline where ``SessionManager.load_key`` awaits it (every other
store call is metered by ``bff.session.metered_store``). The store keys stay with ``SessionManager``.
"""

from __future__ import annotations

from typing import Literal, get_args

from bff.session.store import SessionStore
from bff.telemetry import metrics

#: Why bff ended a session (``bff_sessions_ended_total{reason}``).
SessionEndReason = Literal[
    "logout", "logout_everywhere", "backchannel", "expired", "revoked", "refresh_failed", "replaced"
]
CREATED = metrics.SESSIONS_CREATED.labels()
ENDED = {reason: metrics.SESSIONS_ENDED.labels(reason=reason) for reason in get_args(SessionEndReason)}
GETEX_TIME = metrics.STORE_DURATION.labels(operation="get_and_touch")
GETEX_ERRORS = metrics.STORE_ERRORS.labels(operation="get_and_touch")


async def end_record(store: SessionStore, key: str, *, reason: SessionEndReason) -> bool:
    """Delete the record under ``key``; True, and counted as ended for ``reason``, when there was one."""
    if not await store.delete(key):
        return False
    ENDED[reason].inc()
    return True
