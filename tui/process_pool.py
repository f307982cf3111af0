"""Worker processes (joblib's loky backend) started from inside the running app.

loky launches resource-tracker processes (its own and multiprocessing's) and hands them
`sys.stderr.fileno()`. While Textual runs,
`sys.stderr` is Textual's print capture, whose `fileno()` is -1, so the launch fails with "bad value(s) in
fds_to_keep" and so does anything run with n_jobs > 1 (`mini validate` from the command line is not
affected). `ready_for_process_pools` launches the trackers with stderr pointed at /dev/null instead: their
only output is warnings about leaked resources, which must not scribble over the screen anyway.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

_lock = threading.Lock()


def ready_for_process_pools() -> None:
    """Make sure the resource trackers run; call from a worker thread before a joblib Parallel."""
    from multiprocessing import resource_tracker

    from joblib.externals.loky.backend.resource_tracker import _resource_tracker

    # redirect_stderr swaps sys.stderr for the whole process, briefly: a print from another thread in
    # that moment goes to /dev/null instead of Textual's capture, which shows nothing either.
    with _lock, open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        _resource_tracker.ensure_running()
        resource_tracker.ensure_running()


def stop_process_pools() -> None:
    """Kill joblib's worker processes, if any were started: the app is quitting and nobody waits for what
    they compute. (Left alone, loky's exit handler waits for the group each worker has in hand, tens of
    seconds for a validation.) Cheap when no pool was ever started: loky is then not even imported."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)
