"""Errors the store raises. Each message is one line a person can act on."""


class StoreError(Exception):
    """The database cannot do what was asked (missing file, wrong version, read-only, bad query)."""


class StoreLockedError(StoreError):
    """Another process holds the database file."""


class StoreInterrupted(StoreError):
    """A query was stopped on request (`Store.interrupted_when`); a transaction it was in was rolled back."""
