"""The training engine (PyTorch: seconds to import) imported in the background as soon as the Train screen opens,
while the person reads the form (tui/screens/train.py)."""

from __future__ import annotations

import contextlib
import threading

ENGINE_READY = threading.Event()
"""Set once the training engine (PyTorch) is imported; until then a started training says it is loading it.
(Not `sys.modules`: a module is listed there from the moment its import begins.)"""


def import_training() -> None:
    """Import the training engine (PyTorch: seconds) so that ctrl+s starts without waiting for it."""
    with contextlib.suppress(Exception):  # a failed import is reported by the training worker itself
        import engine.pipeline  # noqa: F401
        from engine.sae.train import warm_up

        warm_up()
        ENGINE_READY.set()
