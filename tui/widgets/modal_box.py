"""The centred box the app's modal screens draw (the key map, the Rank dialog, the label and note dialogs): one
style, defined once."""

from __future__ import annotations


def box_css(screen: str, box: str, title_align: str = "center") -> str:
    """CSS for `screen` (a class name) centring its box `#box`: 76 columns or the terminal's width, as tall
    as its content, a rounded border with the title at `title_align`."""
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
        border-title-align: {title_align};
        background: $panel;
    }}
    """
