"""ThreadStores.interrupt: a purpose's cursors stop (a query in flight, or the next one), others go on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from store import Store
from tui.thread_stores import ThreadStores

LONG_QUERY = "SELECT sum(i) FROM range(1000000000000) t(i)"  # minutes, unless interrupted


@pytest.fixture
def stores(tmp_path: Path):
    path = tmp_path / "t.duckdb"
    with Store.open(path) as db:
        db.con.execute("CREATE TABLE t AS SELECT range AS i FROM range(10)")
    stores = ThreadStores(Store.open(path))
    yield stores
    stores.close()


def test_interrupting_a_purpose_stops_its_query_and_not_the_others(stores: ThreadStores) -> None:
    started = {"ahead": threading.Event(), "other": threading.Event()}
    outcome: dict[str, str] = {}

    def read(purpose: str) -> None:
        try:
            with stores.cursor(purpose) as db:
                started[purpose].set()
                if purpose == "ahead":
                    db.con.execute(LONG_QUERY).fetchall()
                else:
                    time.sleep(0.5)  # in a cursor's hands while the other is interrupted
                    outcome[purpose] = f"read {db.scalar('SELECT count(*) FROM t')}"
                    return
            outcome[purpose] = "finished"
        except Exception as error:
            outcome[purpose] = str(error)

    threads = [threading.Thread(target=read, args=(p,), daemon=True) for p in started]
    for thread in threads:
        thread.start()
    assert all(event.wait(10) for event in started.values())
    time.sleep(0.2)  # the long query is running
    begun = time.monotonic()
    stores.interrupt("ahead")
    for thread in threads:
        thread.join(10)
    assert "INTERRUPT" in outcome["ahead"] and time.monotonic() - begun < 5
    assert outcome["other"] == "read 10"


def test_a_cursor_between_two_queries_fails_at_its_next(stores: ThreadStores) -> None:
    computing, go_on = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def read() -> None:
        try:
            with stores.cursor("ahead") as db:
                outcome["first"] = db.scalar("SELECT count(*) FROM t")
                computing.set()
                go_on.wait(10)  # stands for numpy work on what it read
                outcome["second"] = db.scalar("SELECT count(*) FROM t")
        except Exception as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert computing.wait(10)
    stores.interrupt("ahead")
    stores.interrupt("ahead")  # again, on the cursor it closed: nothing to stop, no error
    go_on.set()
    thread.join(10)
    assert outcome["first"] == 10 and "second" not in outcome
    assert "closed" in str(outcome["error"])
    with stores.cursor() as db:  # the connection itself is untouched
        assert db.scalar("SELECT count(*) FROM t") == 10


def test_read_and_post_posts_the_newest_read_only_and_a_failure_as_a_message(stores: ThreadStores) -> None:
    """A read replaced by a newer one (an exclusive worker cancelled) posts nothing; a failed read posts
    what `failed` makes of its error, and the app goes on."""
    import asyncio
    from dataclasses import dataclass

    from textual import work
    from textual.app import App
    from textual.message import Message

    gate = threading.Event()

    class Reader(App):
        @dataclass
        class Read(Message):
            value: object

        def __init__(self) -> None:
            super().__init__()
            self.got: list[object] = []

        @work(thread=True, exclusive=True, group="read")
        def read(self, tag: str, sql: str, wait: bool) -> None:
            def reading(db: Store) -> list[Message]:
                if wait:
                    gate.wait(10)
                return [Reader.Read((tag, db.scalar(sql)))]

            stores.read_and_post(self, reading, lambda error: Reader.Read((tag, f"failed: {type(error).__name__}")))

        def on_reader_read(self, message: Reader.Read) -> None:
            self.got.append(message.value)

    async def drive() -> list[object]:
        app = Reader()
        async with app.run_test() as pilot:
            app.read("old", "SELECT count(*) FROM t", True)
            await pilot.pause()
            app.read("new", "SELECT count(*) + 1 FROM t", False)  # replaces the first, still reading
            for _ in range(500):
                if app.got:
                    break
                await pilot.pause(0.02)
            gate.set()
            await asyncio.sleep(0.3)  # the first thread ends its read now: what it would post comes late
            await pilot.pause()
            app.read("bad", "SELECT * FROM no_such_table", False)
            for _ in range(500):
                if len(app.got) > 1:
                    break
                await pilot.pause(0.02)
            return app.got

    assert asyncio.run(drive()) == [("new", 11), ("bad", "failed: CatalogException")]
