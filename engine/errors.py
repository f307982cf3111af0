"""Errors about a person's input. Each message is one line naming the file, column or row."""


class InputError(ValueError):
    """Input that mini refuses: the message says where and what is wrong."""


class Cancelled(Exception):
    """Work stopped because the person asked (its event was set); nothing of it was stored."""
