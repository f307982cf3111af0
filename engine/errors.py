"""Errors about a person's input. Each message is one line naming the file, column or row."""


class InputError(ValueError):
    """Input that mini refuses: the message says where and what is wrong."""
