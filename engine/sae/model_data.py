"""What a stack trains on, one row per bin: the counts themselves for a plain SAE, a transcoder's inputs (with their
history) followed by its targets otherwise. `mini train` (engine.pipeline) and a sweep's planner build it here, so a
sweep's workers train exactly what `mini train` would."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.memory import check_fits
from engine.sae.history import history_examples


class UnitRoles(NamedTuple):
    """A transcoder's units, as the dataset's unit indices (ascending)."""

    inputs: np.ndarray
    """The units its code is computed from."""
    targets: np.ndarray
    """The units it reconstructs: its decoder rows, signatures and QC are over these."""

    def describe(self) -> str:
        return f"transcoder: inputs {len(self.inputs)} units, targets {len(self.targets)} units"

    def as_lists(self) -> dict[str, list[int]]:
        """role ('input', 'target') -> unit ids, as run_units stores them (and a sweep's plan)."""
        return {"input": self.inputs.tolist(), "target": self.targets.tolist()}

    @classmethod
    def from_lists(cls, units: dict[str, list[int]] | None) -> UnitRoles | None:
        if not units:
            return None
        return cls(np.asarray(units["input"], dtype=np.int64), np.asarray(units["target"], dtype=np.int64))


class ModelData(NamedTuple):
    """What a stack trains on and is scored on (model_data): `mini train` and every worker of a sweep use it."""

    counts: np.ndarray
    """The model's examples, one row per bin (model_examples)."""
    splits: np.ndarray
    """Each bin's split; 'outside' also for a bin without its whole history."""
    roles: UnitRoles | None
    """A transcoder's units (with --history, every unit of an SAE is both); None: a plain SAE."""
    incomplete: int
    """Bins without their whole history in their trial (not trained on or scored)."""

    @property
    def d_out(self) -> int | None:
        """The targets' width for build_stack; None: a plain SAE."""
        return None if self.roles is None else len(self.roles.targets)

    def targets(self) -> np.ndarray:
        """The columns the stack reconstructs (what settings are chosen from)."""
        return self.counts if self.roles is None else self.counts[:, self.counts.shape[1] - len(self.roles.targets):]

    def history_note(self, history: int) -> str | None:
        if not self.incomplete:
            return None
        return (f"--history {history}: {self.incomplete:,} bins (the first {history - 1} of each trial) have no full "
                "history in their trial: not trained on or scored; encoded with the missing lags at the units' "
                "train means")


def model_data(counts: np.ndarray, splits: np.ndarray, trial_ids: np.ndarray, roles: UnitRoles | None,
               history: int) -> ModelData:
    """The examples and splits a stack with these roles and `history` lags trains on, from the dataset's counts
    [bins, units] in time order. Bins without their whole history are, like bins outside an epoch, not trained on
    or scored but still encoded (their missing lags at the units' train means), so that ranking and validation,
    which read every bin, have a code for them."""
    if history > 1 and roles is None:  # context for an SAE: every unit's history decodes every unit
        every = np.arange(counts.shape[1])
        roles = UnitRoles(every, every)
    examples, complete = model_examples(counts, roles, history, trial_ids, splits == "train")
    incomplete = 0
    if complete is not None and not complete.all():
        incomplete = int((~complete).sum())
        splits = np.where(complete, splits, "outside")
    return ModelData(examples, splits, roles, incomplete)


def model_examples(counts: np.ndarray, roles: UnitRoles | None, history: int = 1,
                   trial_ids: np.ndarray | None = None, train: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """What the stack trains on, one row per bin, and which bins have their whole history (None: all): the counts
    themselves for a plain SAE, a transcoder's inputs followed by its targets otherwise (SAEStack.split_example
    splits them again), the inputs with `history` lags of their trial (engine.sae.history, `trial_ids` and the
    `train` mask needed) when history > 1."""
    if history > 1:
        assert roles is not None and trial_ids is not None and train is not None
        fill = counts[train][:, roles.inputs].mean(axis=0) if train.any() else np.zeros(len(roles.inputs))
        return history_examples(counts, roles.inputs, roles.targets, trial_ids, history, fill.astype(np.float32))
    if roles is None:
        return counts, None
    check_fits(f"the transcoder's examples, {counts.shape[0]:,} bins × {len(roles.inputs) + len(roles.targets):,} "
               "units as float32", counts.shape[0] * (len(roles.inputs) + len(roles.targets)) * 4,
               "select fewer units")
    return np.concatenate([counts[:, roles.inputs], counts[:, roles.targets]], axis=1), None
