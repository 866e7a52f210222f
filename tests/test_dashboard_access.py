"""How request threads reach the cloud store: stores are lent per request and come back, so
the connections opened stay within the most requests served at once, however many threads
the server starts and retires over time."""

from __future__ import annotations

import threading

import pytest

from cloud.dashboard.access import StoreAccess
from cloud.store.postgres import PostgresCloudStore
from cloud.store.sqlite import SQLiteCloudStore
from tests.pg_fixtures import pg_url  # noqa: F401  (fixture)


def in_new_thread(work) -> None:
    """Run ``work`` on a thread that ends afterwards, as a retired server worker thread does."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001  (handed to the test's thread)
            failed.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


class Counted:
    """A store whose ``opener()`` counts the stores it opens and those closed again."""

    def __init__(self, store) -> None:
        self.store, self.opened, self.closed = store, 0, 0

    def opener(self):
        open_again = self.store.opener()

        def open_counted():
            self.opened += 1
            other = open_again()
            close = other.close

            def counted_close() -> None:
                self.closed += 1
                close()

            other.close = counted_close
            return other

        return open_counted


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        opened = SQLiteCloudStore(tmp_path / "cloud.db")
    else:
        opened = PostgresCloudStore(request.getfixturevalue("pg_url"))
    yield Counted(opened)
    opened.close()


def test_threads_that_come_and_go_reuse_one_store(store):
    access = StoreAccess(store)

    def read() -> None:
        with access() as mine:
            assert mine is not store.store and mine.sites() == []

    for _ in range(30):
        in_new_thread(read)
    assert store.opened == 1
    access.close()
    assert store.closed == 1


def test_requests_at_once_each_get_their_own_store_and_no_more_are_opened(store):
    access = StoreAccess(store)
    inside, release = threading.Barrier(4), threading.Event()
    seen: list[object] = []

    def hold() -> None:
        with access() as mine:
            seen.append(mine)
            inside.wait(timeout=30)
            release.wait(timeout=30)

    for _ in range(2):  # the second round finds the first round's stores idle
        threads = [threading.Thread(target=hold) for _ in range(3)]
        for thread in threads:
            thread.start()
        inside.wait(timeout=30)
        release.set()
        for thread in threads:
            thread.join()
        release.clear()
    assert len({id(s) for s in seen[:3]}) == 3  # never one store for two requests at once
    assert {id(s) for s in seen[3:]} == {id(s) for s in seen[:3]}
    assert store.opened == 3
    access.close()
    assert store.closed == 3


def test_a_store_without_an_opener_is_shared_under_a_lock():
    class Plain:
        label = "plain"

    plain = Plain()
    access = StoreAccess(plain)
    with access() as mine:
        assert mine is plain
