"""The centred box the app's modal screens draw (the key map, the Rank dialog): one style, defined once."""

from __future__ import annotations


def box_css(screen: str, box: str) -> str:
    """CSS for `screen` (a class name) centring its box `#box`: 76 columns or the terminal's width, as tall
    as its content, a rounded border with the title centred."""
    return f"""
    {screen} {{
        align: center middle;
    }}
    {screen} #{box} {{
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $primary;
        border-title-align: center;
        background: $panel;
    }}
    """
