"""The app in a real terminal: tmux runs `mini` at 80×24 with TERM=xterm-256color and no truecolor,
keys go in with send-keys, the screen is read back with capture-pane, and what the app copies through
OSC 52 is read back from tmux's paste buffer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Store
from tests.conftest import ROOT

TMUX = ("tmux", "-L", "mini-tests")
"""A tmux server of the tests' own (its socket is named): a person's tmux sessions and settings are
never touched, and the server options set here reach no one else."""


class Terminal:
    """One tmux session running one command."""

    def __init__(self, command: str, size: tuple[int, int] = (80, 24)):
        self.name = f"mini-test-{uuid.uuid4().hex[:8]}"
        subprocess.run([*TMUX, "new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]),
                        command], check=True)
        # Keep the pane after the command exits, so its exit can be seen (and its last screen read).
        subprocess.run([*TMUX, "set-option", "-t", self.name, "remain-on-exit", "on"], check=True)
        # Accept OSC 52 from the app into a tmux paste buffer, as `set -g set-clipboard on` does.
        subprocess.run([*TMUX, "set-option", "-s", "set-clipboard", "on"], check=True)

    def screen(self) -> str:
        return subprocess.run([*TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                              check=True).stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run([*TMUX, "send-keys", "-t", self.name, key], check=True)
            time.sleep(0.15)  # a person's pace: each key is handled before the next arrives

    def type(self, text: str) -> None:
        """Type `text` character by character (no key names)."""
        subprocess.run([*TMUX, "send-keys", "-t", self.name, "-l", text], check=True)
        time.sleep(0.15)

    def clipboard(self) -> str:
        """What the app last copied through OSC 52: tmux keeps it as its newest paste buffer."""
        done = subprocess.run([*TMUX, "show-buffer"], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear within {timeout} s; the screen shows:\n{self.screen()}")

    def exited(self, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = subprocess.run([*TMUX, "display-message", "-p", "-t", self.name, "#{pane_dead}"],
                                  capture_output=True, text=True).stdout.strip()
            if dead == "1":
                return True
            time.sleep(0.2)
        return False

    def close(self) -> None:
        subprocess.run([*TMUX, "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal(app_db: Path) -> Iterator[Terminal]:
    assert shutil.which("tmux"), "tmux is needed for this test (it is on every machine this project runs on)"
    # No COLORTERM: the app must read well with 256 colours and no truecolor.
    command = (f"cd {ROOT} && env -u COLORTERM TERM=xterm-256color PYTHONPATH={ROOT} "
               f"{sys.executable} -m tui.cli --db {app_db}")
    term = Terminal(command)
    yield term
    term.close()


def test_home_help_and_quit_in_a_real_terminal(terminal: Terminal, app_db: Path) -> None:
    terminal.wait_for("sample")
    # The run is listed with its status. Waited for, not read off the first frame that names the dataset: on a loaded
    # machine that frame can come while the table still sizes its columns ("finish", "batc").
    terminal.wait_for("finished")
    screen = terminal.wait_for("batchtopk")
    assert all(len(line) <= 80 for line in screen.splitlines())
    terminal.keys("F1")
    help_screen = terminal.wait_for("mini keys")
    assert "ctrl+p" in help_screen
    terminal.keys("Escape")
    terminal.wait_for("Delete run")  # back on Home: its footer shows its keys
    terminal.keys("q")
    assert terminal.exited(), terminal.screen()
    # Quitting closed the database: another process can open it read-write at once.
    Store.open(app_db).close()


def test_a_label_made_from_the_keyboard_is_committed(terminal: Terminal, app_db: Path) -> None:
    terminal.wait_for("sample")
    terminal.keys("Tab", "Enter")  # to the runs, open run 1's ranked features
    terminal.wait_for("suggestion")
    terminal.keys("Enter")  # review the top-ranked feature
    terminal.wait_for("Suggestions")
    terminal.keys("x")  # reject it: one row, committed before the screen moves on
    time.sleep(0.5)
    terminal.keys("q")
    assert terminal.exited(), terminal.screen()
    with Store.open(app_db, read_only=True) as db:
        rows = db.frame("SELECT verdict, source FROM labels ORDER BY label_id DESC LIMIT 1").to_dicts()
    assert rows == [{"verdict": "reject", "source": "person"}]


def test_a_cell_copied_in_sql_reaches_the_terminal_through_osc_52(terminal: Terminal) -> None:
    terminal.wait_for("sample")
    terminal.keys("C-p")  # the command palette
    terminal.wait_for("Search")
    terminal.type("SQL")
    terminal.keys("Enter")
    terminal.wait_for("read-only")
    token = uuid.uuid4().hex[:8]  # the tests' tmux server may hold buffers from earlier tests
    terminal.type(f"SELECT 'copied over ' || 'OSC 52 {token}' AS words, 7 * 6 AS answer")
    terminal.keys("F5")
    terminal.wait_for("1 row")
    terminal.keys("Tab", "c")  # to the results; copy the cell under the cursor
    terminal.wait_for("Copied")
    assert terminal.clipboard() == f"copied over OSC 52 {token}"
    terminal.keys("C")  # the whole row, tab-separated
    deadline = time.monotonic() + 10
    while terminal.clipboard() != f"copied over OSC 52 {token}\t42" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert terminal.clipboard() == f"copied over OSC 52 {token}\t42"


def test_at_80x24_every_screen_keeps_its_essential_keys_and_says_what_scrolls(terminal: Terminal) -> None:
    """Issue 17 in a real terminal: Review's footer once ended at `n`, and nothing said that the Features
    table went on to the right."""
    terminal.wait_for("sample")
    terminal.keys("Tab", "Enter")
    terminal.wait_for(" · suggests ")  # the row under the cursor, its suggestion whole
    features = terminal.wait_for("more columns →")  # its density and score parts are off to the right
    footer = features.rstrip("\n").splitlines()[-1]
    assert "R Rank run" in footer and "esc Back" in footer and "f1 All keys" in footer, footer
    terminal.keys("Right", "Right")
    terminal.wait_for("← more columns")
    terminal.keys("Enter")
    terminal.wait_for("Suggestions")
    review = terminal.wait_for("v Validate")  # the whole screen is drawn, footer included
    footer = review.rstrip("\n").splitlines()[-1]
    for words in ("j Next", "1-9 Accept", "x Reject", "v Validate", "esc Back", "f1 All keys"):
        assert words in footer, footer
    assert all(len(line) <= 80 for line in review.splitlines())
    terminal.keys("F1")
    assert "mini keys: Review" in terminal.wait_for("Review: this screen")
    terminal.keys("Escape", "q")
    assert terminal.exited(), terminal.screen()
