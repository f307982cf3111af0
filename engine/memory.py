"""How much memory a step is about to ask for, checked before it asks.

A bin size of 1e-9 s over an hour, or a spike time at 1e12 s, asks numpy for terabytes: it either fails deep
inside with a MemoryError traceback or, worse, starts swapping the shared machine. Steps that size large
arrays from the input estimate the bytes first and refuse in one line with the numbers.
"""

from __future__ import annotations

import os

from engine.errors import InputError

USABLE_SHARE = 0.8
"""Share of the machine's available memory a step may plan to use: the rest is for the process itself, the
database and whatever else runs."""


def available_bytes() -> int:
    """Memory available to new allocations: MemAvailable from /proc/meminfo (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def human_bytes(n_bytes: float) -> str:
    """1.5 GiB, 146 TiB: binary units, two or three significant digits."""
    value, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(value) < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{value:.3g} {unit}" if unit != "B" else f"{int(value)} B"


def check_fits(what: str, n_bytes: float, hint: str = "") -> None:
    """Refuse when `n_bytes` is more than USABLE_SHARE of the available memory; `what` says what was asked for
    and why it is that big (the message adds the sizes), `hint` what to do instead."""
    available = available_bytes()
    if not n_bytes <= USABLE_SHARE * available:
        raise InputError(f"{what}: {human_bytes(n_bytes)}; this machine has {human_bytes(available)} available"
                         + (f": {hint}" if hint else ""))
