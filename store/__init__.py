"""The only package that holds SQL and opens DuckDB. Imports neither engine nor tui, nor torch."""

from store.db import Store, default_db_path
from store.errors import StoreError, StoreLockedError

__all__ = ["Store", "StoreError", "StoreLockedError", "default_db_path"]
