"""Errors about a person's input. Each message is one line naming the file, column or row."""


class InputError(ValueError):
    """Input that mini refuses: the message says where and what is wrong."""


class Cancelled(Exception):
    """Work stopped because the person asked (its event was set); nothing of it was stored."""


def printable(text: object, limit: int = 60) -> str:
    """Text from a file or a person, safe inside a one-line message: control characters (newlines, terminal
    escape codes) and other unprintable ones escaped as Python would, and cut to `limit` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"
