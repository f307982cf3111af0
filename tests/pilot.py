"""Driving the real app in tests: run it headless with a script at the keys, and let its work finish."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from tui.app import MiniApp

Script = Callable[[MiniApp, Pilot], Awaitable[None]]


async def settle(app: MiniApp, pilot: Pilot, rounds: int = 1) -> None:
    """Let the workers finish and their result messages be handled, `rounds` times (a handled result
    may start more work)."""
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def columns_sized(pilot: Pilot, table: Any) -> None:
    """Wait until a DataTable has sized its columns to its rows (it does so when idle), then repaint it
    whole: the header line could keep the widths it was first drawn with, and a snapshot taken then
    showed a header narrower than its rows (once in a few hundred runs)."""
    for _ in range(100):
        if not table._require_update_dimensions:
            break
        await pilot.pause(0.05)
    table.refresh()
    await pilot.pause(0.1)


def run_app(app: MiniApp, script: Script, *, size: tuple[int, int] = (80, 24),
            before: Script | None = None) -> MiniApp:
    """Run `app` at `size`, then `before` (e.g. open a screen), then `script`; returns the app once shut down."""
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            if before is not None:
                await before(app, pilot)
            await script(app, pilot)

    asyncio.run(main())
    return app
