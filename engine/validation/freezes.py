"""Preregistration: a person commits to a run's labels before reading any test result.

Validation attempts are kept (every test of a label on the test split stays in the multiple-testing
family), but a person who sees test results while labelling can still steer labels towards what passes.
Freezing a run's labels fixes them: no label of the run changes afterwards. A run made blind first refuses
to read its test split until its labels are frozen, so its report can say that they were fixed before any
test result was seen. Hiding means never computing: a result stored in the database would be visible from
the SQL screen anyway.

Every rule raises InputError with one line naming the run and what to do.
"""

from __future__ import annotations

from datetime import datetime

from engine.errors import InputError
from store import Store
from store.freezes import (
    FreezeState,
    accepted_label_count,
    attempt_count,
    freeze_state,
    mark_blind,
    mark_frozen,
)
from store.runs import get_run


def when(moment: datetime) -> str:
    """A freeze's time as messages show it: 2026-12-06 10:00."""
    return moment.strftime("%Y-%m-%d %H:%M")


def _attempts(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


def blind_refusal(run_id: int) -> str:
    """Why a blind run's test split is not read (validation, Review's `v`)."""
    return (f"run {run_id} is blind: its labels must be frozen before the test split is read "
            f"(`mini freeze --run {run_id}`)")


def frozen_refusal(run_id: int, state: FreezeState) -> str:
    """Why a frozen run's labels do not change."""
    return f"run {run_id}'s labels were frozen at {when(state.frozen_at)}; they can no longer change"


def blind_run(db: Store, run_id: int) -> FreezeState:
    """Make the run blind: from now on its test results stay hidden (validation refuses) until its labels
    are frozen. Refused where results have been seen already, or where the labels are frozen."""
    get_run(db, run_id)
    state = freeze_state(db, run_id)
    if state.frozen:
        raise InputError(f"run {run_id}'s labels are frozen already (at {when(state.frozen_at)}): "
                         "blinding now would hide nothing")
    if state.blind:
        raise InputError(f"run {run_id} is blind already (since {when(state.blind_since)}); freeze its labels "
                         f"with `mini freeze --run {run_id}` to read its test results")
    seen = attempt_count(db, run_id)
    if seen:
        raise InputError(f"run {run_id}'s test results have been seen already ({_attempts(seen)}): "
                         "blinding now would hide nothing")
    return mark_blind(db, run_id)


def freeze_labels(db: Store, run_id: int) -> FreezeState:
    """Freeze the run's labels: every later label change of a feature of the run is refused. Records when,
    and how many validation attempts had been stored before. Refused twice, and without accepted labels."""
    get_run(db, run_id)
    state = freeze_state(db, run_id)
    if state.frozen:
        raise InputError(f"run {run_id}'s labels were frozen already, at {when(state.frozen_at)}; a freeze "
                         "is final")
    if not accepted_label_count(db, run_id):
        raise InputError(f"run {run_id} has no accepted labels to freeze; accept labels first (Review, or "
                         "`mini label`)")
    return mark_frozen(db, run_id)


def check_test_allowed(db: Store, run_id: int) -> None:
    """Refuse to read the run's test split while it is blind and its labels are not frozen."""
    if freeze_state(db, run_id).blind:
        raise InputError(blind_refusal(run_id))


def check_labels_open(db: Store, run_id: int) -> None:
    """Refuse any label change of a run whose labels are frozen."""
    state = freeze_state(db, run_id)
    if state.frozen:
        raise InputError(frozen_refusal(run_id, state))


def state_text(state: FreezeState) -> str | None:
    """The run's state in a few words (`mini info`, the Validation screen); None when neither blind nor
    frozen."""
    if state.blind:
        return f"blind since {when(state.blind_since)}: test results hidden until the labels are frozen"
    if state.frozen:
        seen = ("before any test result was seen" if not state.n_attempts_seen
                else f"after {_attempts(state.n_attempts_seen)} had been seen")
        return f"labels frozen at {when(state.frozen_at)}, {seen}"
    return None


def report_paragraph(db: Store, run_id: int) -> str:
    """The report's sentence on preregistration, at the top of its validation section."""
    state = freeze_state(db, run_id)
    if state.frozen and not state.n_attempts_seen:
        blind = f" (blind since {when(state.blind_since)})" if state.blind_since is not None else ""
        return f"Labels frozen at {when(state.frozen_at)} before any test result was seen{blind}."
    if state.frozen:
        n = state.n_attempts_seen
        return (f"Labels frozen at {when(state.frozen_at)} after {n} validation attempt{'s' if n != 1 else ''} "
                f"had been seen.")
    if state.blind:
        return (f"Labels not frozen yet: the run is blind since {when(state.blind_since)}, so no test result "
                f"has been read (`mini freeze --run {run_id}` fixes the labels, then `mini validate` reads it).")
    seen = attempt_count(db, run_id)
    if seen:
        return f"Labels not frozen: test results were seen while labelling ({_attempts(seen)})."
    return (f"Labels not frozen, and no test result has been stored yet: `mini freeze --run {run_id}` fixes "
            "them before the test split is read.")
