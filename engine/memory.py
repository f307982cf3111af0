"""How much memory a step is about to ask for, checked before it asks.

A bin size of 1e-9 s over an hour, or a spike time at 1e12 s, asks numpy for terabytes: it either fails deep
inside with a MemoryError traceback or, worse, starts swapping the shared machine. Steps that size large
arrays from the input estimate the bytes first, from sizes known before anything is allocated (a file's
header, a dataset's row counts), and refuse in one line with the numbers.

MINI_MEMORY_LIMIT (bytes, or a number with KiB/MiB/GiB/TiB, e.g. `8GiB`) caps what a step may plan to use,
for a machine shared with others; unset, a step may plan on USABLE_SHARE of the memory available.
"""

from __future__ import annotations

import os
import re

from engine.errors import InputError

USABLE_SHARE = 0.8
"""Share of the machine's available memory a step may plan to use: the rest is for the process itself, the
database and whatever else runs."""

LIMIT_VARIABLE = "MINI_MEMORY_LIMIT"
"""Environment variable that caps the bytes a step may plan to use (see the module docstring)."""

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
          "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}


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


def memory_limit() -> int | None:
    """The bytes MINI_MEMORY_LIMIT allows, None when it is unset or empty."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?(?:[eE]\d+)?)\s*([A-Za-z]*)", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise InputError(f"{LIMIT_VARIABLE}={text!r}: give bytes, or a number with KiB, MiB, GiB or TiB (e.g. 8GiB)")
    limit = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 1 <= limit < 2 ** 63:
        raise InputError(f"{LIMIT_VARIABLE}={text!r}: must be at least 1 byte and below 8 EiB")
    return int(limit)


def human_bytes(n_bytes: float) -> str:
    """1.5 GiB, 146 TiB: binary units, two or three significant digits."""
    value, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(value) < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{value:.3g} {unit}" if unit != "B" else f"{int(value)} B"


def check_fits(what: str, n_bytes: float, hint: str = "") -> None:
    """Refuse when `n_bytes` is more than a step may plan to use (MINI_MEMORY_LIMIT, else USABLE_SHARE of the
    available memory); `what` says what was asked for and why it is that big (the message adds the sizes),
    `hint` what to do instead."""
    limit = memory_limit()
    if limit is not None:
        allowed, have = limit, f"{LIMIT_VARIABLE} allows {human_bytes(limit)}"
    else:
        available = available_bytes()
        allowed, have = USABLE_SHARE * available, f"this machine has {human_bytes(available)} available"
    if not n_bytes <= allowed:
        raise InputError(f"{what}: {human_bytes(n_bytes)}; {have}" + (f": {hint}" if hint else ""))
