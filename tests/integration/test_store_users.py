"""The store's user listing (``list_users``), checked on every backend of the store contract:
ids under a prefix in id order, never another namespace's, with counts and activity."""

from __future__ import annotations

from datetime import timedelta

from mnemo.store.base import MemoryStore
from tests.integration.test_store_contract import T0, event, make_store, memory, put, store  # noqa: F401  # fixtures

__all__ = ["make_store", "store"]


async def test_users_are_listed_by_id_with_their_counts_and_first_and_last_activity(store: MemoryStore) -> None:
    kept, replaced = memory("Lives in Oslo", user="carol", at=10), memory("Lives in Rome", user="carol", at=20)
    await put(store, kept, replaced, memory("Likes tea", user="bob", at=5))
    await store.invalidate(replaced.id, T0 + timedelta(seconds=30), None)
    await store.add_events(
        [
            event(kept.id, user="carol", at=10),
            event(replaced.id, user="carol", at=40, action="DELETE"),
            event("gone", user="dave", at=7, action="ERASE"),  # only an event left: still held
        ]
    )

    listing = await store.list_users()

    assert [u.user_id for u in listing.users] == ["bob", "carol", "dave"]
    assert (listing.total, listing.complete) == (3, True)
    bob, carol, dave = listing.users
    assert (carol.memories, carol.total_memories, carol.events) == (1, 2, 2)
    assert (carol.first_activity, carol.last_activity) == (T0 + timedelta(seconds=10), T0 + timedelta(seconds=40))
    assert (bob.memories, bob.total_memories, bob.events) == (1, 1, 0)
    assert bob.first_activity == bob.last_activity == T0 + timedelta(seconds=5)
    assert (dave.memories, dave.total_memories, dave.events) == (0, 0, 1)
    assert dave.last_activity == T0 + timedelta(seconds=7)


async def test_a_prefix_lists_the_ids_directly_under_it_and_never_another_namespaces(store: MemoryStore) -> None:
    for user in ("alice", "albert", "bob", "acme/alice", "acme/amy", "acme/bob", "acmeish/zed"):
        await put(store, memory(f"fact of {user}", user=user))

    plain = await store.list_users()
    under_a = await store.list_users("a")
    acme = await store.list_users("acme/")
    acme_a = await store.list_users("acme/a")

    assert [u.user_id for u in plain.users] == ["albert", "alice", "bob"]
    assert [u.user_id for u in under_a.users] == ["albert", "alice"]
    assert [u.user_id for u in acme.users] == ["acme/alice", "acme/amy", "acme/bob"]
    assert [u.user_id for u in acme_a.users] == ["acme/alice", "acme/amy"]
    assert [u.user_id for u in (await store.list_users("alice")).users] == ["alice"]  # an exact id lists itself
    assert (await store.list_users("acme")).users == []  # acme/... is a namespace, not ids under "acme"
    assert (await store.list_users("zz")).total == 0


async def test_pages_follow_the_id_order_and_the_total_counts_every_id(store: MemoryStore) -> None:
    names = [f"user-{n:02d}" for n in range(7)]
    for name in reversed(names):
        await put(store, memory("x", user=name))

    pages = [await store.list_users("user-", limit=3, offset=offset) for offset in (0, 3, 6)]

    assert [[u.user_id for u in page.users] for page in pages] == [names[:3], names[3:6], names[6:]]
    assert {page.total for page in pages} == {7}


async def test_an_erased_user_is_no_longer_listed(store: MemoryStore) -> None:
    gone = memory("secret", user="erin")
    await put(store, gone, memory("stays", user="frank"))
    await store.add_events([event(gone.id, user="erin")])

    await store.delete_user("erin")

    listing = await store.list_users()
    assert [u.user_id for u in listing.users] == ["frank"] and listing.total == 1
