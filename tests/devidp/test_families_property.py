"""Property: a refresh-token family accepts exactly the presentations its rules allow, whatever the order.

Any sequence of presentations (the current token, the one the last rotation replaced, an older one) and pauses, with
and without a reuse grace window: the current token rotates; the replaced one rotates only within the window after
that rotation; anything else revokes the family, once, and a revoked family accepts nothing ever again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from bff.session.memory_store import MemoryStore
from bff_devtools.devidp.backchannel import BackchannelNotifier, LogoutTarget
from bff_devtools.devidp.families import TokenFamilies
from bff_devtools.devidp.settings import default_users
from bff_devtools.devidp.storage import Blocklist
from tests.support.clock import FakeClock

FAST = settings(max_examples=200, deadline=None)

#: ("present", k): the token k rotations old (0 = current, 1 = replaced by the last rotation, 2+ = older);
#: ("wait", seconds).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("present"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("wait"), st.floats(min_value=0, max_value=45, allow_nan=False)),
    ),
    max_size=14,
)


@dataclass
class Notifications:
    targets: list[LogoutTarget] = field(default_factory=list)

    async def notify(self, targets: Iterable[LogoutTarget]) -> None:
        self.targets.extend(targets)


@FAST
@given(grace=st.sampled_from([0.0, 1.0, 30.0]), script=steps)
def test_a_family_accepts_exactly_what_its_rules_allow(grace: float, script: list[tuple[str, float]]) -> None:
    asyncio.run(_run(grace, script))


async def _run(grace: float, script: list[tuple[str, float]]) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    notifications = Notifications()
    families = TokenFamilies(
        store,
        refresh_token_ttl=7 * 86400,
        reuse_grace=grace,
        blocklist=Blocklist(store, clock=clock),
        notifier=cast(BackchannelNotifier, notifications),
        clock=clock,
    )
    alice = default_users()[0]
    family, first = await families.create(
        client_id="spa-bff", user=alice, sid="sid-0123456789abcdef", scope="openid", auth_time=0, user_version=0
    )
    tokens = [first]  # oldest first: tokens[-1] is current
    rotated_at: float | None = None
    active = True
    for action, value in script:
        if action == "wait":
            clock.advance(value)
            continue
        age = int(value)
        if age >= len(tokens):
            continue
        presented = tokens[-1 - age]
        allowed = active and (
            age == 0 or (age == 1 and grace > 0 and rotated_at is not None and clock() - rotated_at <= grace)
        )
        loaded = await families.redeem(presented)
        if not allowed:
            assert loaded is None
            active = False  # reuse revokes (a no-op on a family revoked already)
            continue
        assert loaded is not None
        successor = await families.rotate(loaded)
        assert successor is not None
        tokens.append(successor)
        rotated_at = clock()
    state = await families.load(family.family_id)
    assert state is not None
    assert state.family.state == ("active" if active else "revoked")
    assert len(notifications.targets) == (0 if active else 1)  # one back-channel logout, at the revocation
    await store.aclose()
