"""Which of a dataset's units a transcoder reads (`--inputs`) and reconstructs (`--targets`).

A selection is one of three forms (a form per selection, so a term never means two things):

- indices and names: comma-separated terms, each a unit index (`20`), an inclusive index range (`0-59`) or a unit
  name (`u12`); a name that looks like an index or a range is written with the `name:` prefix
  (`name:12`, `name:0-5`), which makes every term of the selection a name;
- attributes: comma-separated `key=value` terms stored at import (`--unit-meta`, an NWB file's unit columns), all of
  which a unit must match (AND); `value` may list alternatives with `|` (`area=CA1|CA3,shank=2`).

Units are returned once each, in the dataset's unit order, whatever order the terms name them in.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from engine.errors import InputError

_INDEX = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)-(\d+)")


class UnitSelection(NamedTuple):
    """A parsed selection, before it meets a dataset."""

    option: str
    """The option it came from (--inputs, --targets), for messages."""
    text: str
    """As given."""
    kind: str
    """'units' (indices, ranges, names) or 'attributes' (key=value terms)."""
    terms: tuple[str, ...]
    """The comma-separated terms (names without the `name:` prefix)."""
    names_only: bool = False
    """`name:` given: every term is a name."""


def roles_text(n_inputs: int, inputs: str | None, n_targets: int, targets: str | None) -> str:
    """'inputs N units (0-59), targets M units (60-119)': a transcoder's units as the report and `mini info` say
    them (each selection as given; 'all' where none was, as for an SAE with --history)."""
    return f"inputs {n_inputs} units ({inputs or 'all'}), targets {n_targets} units ({targets or 'all'})"


def parse_selection(option: str, text: str) -> UnitSelection:
    """The selection's form and terms, refused in one line when it cannot mean anything (checked before any
    dataset is read)."""
    if text is None or not text.strip():
        raise InputError(f"{option}: an empty selection (give indices such as 0-59, names, or key=value)")
    body, names_only = text.strip(), False
    if body.startswith("name:"):
        body, names_only = body.removeprefix("name:"), True
    terms = tuple(term.strip() for term in body.split(","))
    if any(not term for term in terms):
        raise InputError(f"{option} {text}: an empty term (two commas, or a comma at an end)")
    with_equals = [term for term in terms if "=" in term]
    if with_equals and not names_only:
        if len(with_equals) != len(terms):
            raise InputError(f"{option} {text}: mixes key=value terms with units; a selection is either units "
                             "(indices, ranges, names) or attributes (key=value terms, all of which must match)")
        for term in terms:
            key, _, value = term.partition("=")
            if not key.strip() or not value.strip() or any(not v.strip() for v in value.split("|")):
                raise InputError(f"{option} {text}: '{term}' needs a key and a value (e.g. area=CA1)")
        return UnitSelection(option, text, "attributes", terms)
    if not names_only:
        for term in terms:
            match = _RANGE.fullmatch(term)
            if match and int(match[1]) > int(match[2]):
                raise InputError(f"{option} {text}: bad range '{term}' (its start is after its end)")
    return UnitSelection(option, text, "units", terms, names_only)


def resolve_selection(selection: UnitSelection, unit_names: list[str],
                      attributes: dict[str, dict[int, str]] | None = None) -> np.ndarray:
    """The selected unit indices (ascending, each once) of a dataset with these unit names and attributes
    (key -> unit index -> value); refused in one line when a term names nothing or nothing is selected."""
    option, text, n = selection.option, selection.text, len(unit_names)
    chosen: set[int] = set()
    if selection.kind == "attributes":
        attributes = attributes or {}
        mask = np.ones(n, dtype=bool)
        for term in selection.terms:
            key, _, value = (part.strip() for part in term.partition("="))
            if key not in attributes:
                known = ", ".join(sorted(attributes)) or "none were stored at import (--unit-meta)"
                raise InputError(f"{option} {text}: the dataset's units have no attribute '{key}' (attributes: "
                                 f"{known})")
            stored = attributes[key]
            wanted = {v.strip() for v in value.split("|")}
            missing = sorted(wanted - set(stored.values()))
            if missing:
                values = sorted(set(stored.values()))
                shown = ", ".join(values[:12]) + (", …" if len(values) > 12 else "")
                raise InputError(f"{option} {text}: no unit has {key} = {missing[0]} (values of {key}: {shown})")
            mask &= np.isin(np.arange(n), [u for u, v in stored.items() if v in wanted])
        chosen = set(np.flatnonzero(mask).tolist())
        if not chosen:
            raise InputError(f"{option} {text}: no unit matches every term (an empty selection)")
        return np.array(sorted(chosen), dtype=np.int64)
    index_of = {name: i for i, name in enumerate(unit_names)}
    for term in selection.terms:
        if not selection.names_only and (_INDEX.fullmatch(term) or _RANGE.fullmatch(term)):
            match = _RANGE.fullmatch(term)
            low, high = (int(match[1]), int(match[2])) if match else (int(term), int(term))
            if high >= n:
                raise InputError(f"{option} {text}: unit index {high} is out of range (the dataset has {n} units, "
                                 f"0-{n - 1}; a unit named '{term}' is written name:{term})")
            chosen.update(range(low, high + 1))
        elif term in index_of:
            chosen.add(index_of[term])
        else:
            raise InputError(f"{option} {text}: no unit named '{term}' (`mini sql` can list the units table; "
                             "indices are 0-based)")
    return np.array(sorted(chosen), dtype=np.int64)
