"""The key map is complete: every key bound on every screen is in the help screen and in docs/keys.md."""

from __future__ import annotations

import importlib
import re

import pytest
from textual.binding import Binding
from textual.keys import key_to_character

from tests.conftest import ROOT
from tui.screen_registry import SCREENS
from tui.screens.help import key_map
from tui.screens.home import HomeScreen

NAMES = {"escape": "esc", "question_mark": "?"}


def _screen_classes() -> list[tuple[str, type]]:
    classes = [("Home", HomeScreen)]
    for entry in SCREENS.values():
        classes.append((entry.title, getattr(importlib.import_module(entry.module), entry.cls)))
    return classes


def _bound_keys(screen_class: type) -> set[str]:
    """The keys a screen binds itself (not those it inherits from Textual's Screen)."""
    keys = set()
    for binding in screen_class.BINDINGS:
        if isinstance(binding, Binding):
            keys.update(k.strip() for k in binding.key.split(","))
        else:
            keys.update(k.strip() for k in binding[0].split(","))
    return keys


def _spellings(key: str) -> list[str]:
    """How a key may be written in the docs: 'question_mark' as '?', '1' also inside a range '1–9'."""
    character = key_to_character(key) if len(key) > 1 and "+" not in key else key
    return [s for s in {key, NAMES.get(key, key), character or key} if s]


def _mentioned(key: str, text: str) -> bool:
    for spelling in _spellings(key):
        if re.search(rf"(?<![\w+]){re.escape(spelling)}(?![\w+])", text):
            return True
    if key.isdigit():  # 1–9 style ranges
        return any(int(a) <= int(key) <= int(b) for a, b in re.findall(r"(\d)\s*[–-]\s*(\d)", text))
    return False


def _docs_section(title: str) -> str:
    text = (ROOT / "docs" / "keys.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/keys.md has no '## {title}' section"
    return match.group(1)


def test_every_screen_of_the_registry_exists_with_its_help_keys() -> None:
    for name, entry in SCREENS.items():
        module = importlib.import_module(entry.module)
        assert hasattr(module, entry.cls), f"{entry.module} has no {entry.cls} (SCREENS['{name}'])"
        assert module.HELP_KEYS, f"{entry.module}.HELP_KEYS is empty"


@pytest.mark.parametrize(("title", "screen_class"), _screen_classes(), ids=lambda v: getattr(v, "__name__", v))
def test_bound_keys_are_in_help_and_docs(title: str, screen_class: type) -> None:
    help_text = "\n".join(f"{k}  {meaning}" for section, keys in key_map() if section == title
                          for k, meaning in keys)
    assert help_text, f"the help screen has no '{title}' section"
    docs = _docs_section(title)
    for key in _bound_keys(screen_class):
        assert _mentioned(key, help_text), f"{title}: key '{key}' is bound but not in the help screen"
        assert _mentioned(key, docs), f"{title}: key '{key}' is bound but not in docs/keys.md"
    assert "written with the screen" not in docs, f"docs/keys.md: the {title} section is still a placeholder"
