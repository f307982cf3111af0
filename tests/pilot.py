"""Driving the real app in tests: run it headless with a script at the keys, and let its work finish."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.screen import Screen

from tui.app import MiniApp

Script = Callable[[MiniApp, Pilot], Awaitable[None]]


async def settle(app: MiniApp, pilot: Pilot, rounds: int = 1) -> None:
    """Let the workers finish and their result messages be handled, `rounds` times (a handled result
    may start more work)."""
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def until(pilot: Pilot, condition: Callable[[], Any], timeout: float = 20) -> None:
    """Pause in 20 ms steps until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


async def screen_after(pilot: Pilot, *keys: str) -> Screen[Any]:
    """Press `keys`, let the app handle them, and return the screen it shows then."""
    await pilot.press(*keys)
    await pilot.pause()
    return pilot.app.screen


async def palette_search(pilot: Pilot, typed: str, best_match: str) -> list[str]:
    """Open the command palette (ctrl+p) and type `typed`; the palette searches in the background, so wait
    (up to 5 s) until the first command listed starts with `best_match`. Returns the prompts listed."""
    await pilot.press("ctrl+p")
    await pilot.pause()
    await pilot.press(*typed)
    prompts: list[str] = []
    for _ in range(100):
        await pilot.pause(0.05)
        prompts = [str(option.prompt) for option in pilot.app.screen.query_one("CommandList").options]
        if prompts and prompts[0].startswith(best_match):
            break
    return prompts


def notifications(app: MiniApp) -> list[str]:
    """The messages of the notifications shown so far."""
    return [notification.message for notification in app._notifications]


def plain(renderable: Any, width: int = 120) -> str:
    """What a widget's content reads as, without colours."""
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


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
