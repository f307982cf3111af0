"""Driving the real app in tests: run it headless with a script at the keys, and let its work finish."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from textual.pilot import Pilot

from tui.app import MiniApp

Script = Callable[[MiniApp, Pilot], Awaitable[None]]


async def settle(app: MiniApp, pilot: Pilot, rounds: int = 1) -> None:
    """Let the workers finish and their result messages be handled, `rounds` times (a handled result
    may start more work)."""
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()


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
