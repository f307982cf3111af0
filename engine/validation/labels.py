"""Label a feature: accept one of its suggestions, name it (with or without a predicate), reject it,
or mark it unsure. The CLI (`mini label`) and the app's review screen both come through here.

A predicate (one clause or a conjunction, engine.analysis.predicates) is what validation tests on held-out data,
so it is parsed and checked against the dataset's natural variables now, not when it is first tested.

Every label change (a new label, an undo) comes through this module, so this is where a run whose labels
are frozen (engine.validation.freezes) refuses them.
"""

from __future__ import annotations

from engine.analysis.predicates import Predicate, parse_predicate
from engine.errors import InputError
from engine.validation.freezes import check_labels_open
from store import Store
from store.datasets import get_dataset, load_natural_variables, variable_levels
from store.errors import StoreError
from store.labels import Label, add_label, add_label_if_open, label_run_id, run_sae_features, suggestion
from store.labels import undo_label as store_undo_label
from store.runs import get_run

MAX_LABEL_CHARS = 2_000
"""A label is a short name of what a feature encodes; longer text belongs in its note."""


def label_feature(db: Store, run_id: int, feature_id: int, *, sae_id: int | None = None,
                  accept: int | None = None, name: str | None = None, predicate: str | None = None,
                  verdict: str | None = None, note: str | None = None, source: str = "person") -> int:
    """Record one labelling action and return its label_id.

    Exactly one of: accept=N (the Nth suggestion), name (optionally with a predicate), or
    verdict='reject' / 'unsure'.
    """
    chosen = [accept is not None, name is not None, verdict is not None]
    if sum(chosen) != 1:
        raise InputError("give exactly one of --accept N, --name TEXT, --reject, --unsure")
    if predicate is not None and name is None:
        raise InputError("--predicate: goes only with --name (a suggestion brings its own; a rejected or unsure "
                         "feature has none)")
    if sae_id is not None:  # Review's path: one statement when the label is fine, as it nearly always is
        try:
            label = _label(db, run_id, sae_id, feature_id, accept, name, predicate, verdict, note, source)
        except (InputError, StoreError):
            label = None  # the checks below say what is wrong, in their order
        label_id = None if label is None else add_label_if_open(db, run_id, label)
        if label_id is not None:
            return label_id
    saes = run_sae_features(db, run_id)
    if saes is None:
        get_run(db, run_id)  # raises the error that names the runs there are
    if not saes:
        raise InputError(f"run {run_id} has no trained SAEs")
    check_labels_open(db, run_id)
    sae_id = next(iter(saes)) if sae_id is None else sae_id
    if sae_id not in saes:
        raise InputError(f"--sae {sae_id}: not an SAE of run {run_id} (its SAEs: {', '.join(map(str, saes))})")
    n_features = saes[sae_id]
    if not 0 <= feature_id < n_features:
        raise InputError(f"--feature {feature_id}: SAE {sae_id} has no feature {feature_id} (it has {n_features}, "
                         f"numbered 0 to {n_features - 1})")
    return add_label(db, _label(db, run_id, sae_id, feature_id, accept, name, predicate, verdict, note, source))


def _label(db: Store, run_id: int, sae_id: int, feature_id: int, accept: int | None, name: str | None,
           predicate: str | None, verdict: str | None, note: str | None, source: str) -> Label:
    """The label row one labelling action writes (a suggestion looked up, a predicate parsed and checked)."""
    if accept is not None:
        picked = suggestion(db, sae_id, feature_id, accept)
        return Label(sae_id, feature_id, "accept", name=picked["predicate"], predicate=picked["predicate"],
                     variable=picked["variable"], value=picked["value"], low=picked["low"], high=picked["high"],
                     source=source, note=note)
    if name is not None:
        if not name.strip():
            raise InputError("--name: a label needs some text")
        if len(name) > MAX_LABEL_CHARS:  # control characters are kept as given, and escaped where shown
            raise InputError(f"--name: {len(name):,} characters; a label takes at most {MAX_LABEL_CHARS:,} (put more "
                             "in --note)")
        parsed: Predicate | None = None
        if predicate is not None:
            dataset = get_dataset(db, get_run(db, run_id)["config"]["dataset"])
            kinds = dict(load_natural_variables(db, dataset["dataset_id"]).select("variable", "kind").iter_rows())
            parsed = parse_predicate(predicate, kinds)
            for clause in parsed.clauses:  # a level the variable never takes could never be tested
                if clause.kind == "categorical":
                    levels = variable_levels(db, dataset["dataset_id"], clause.variable)
                    if clause.value not in levels:
                        shown = ", ".join(levels[:8]) + (", …" if len(levels) > 8 else "")
                        raise InputError(f"predicate '{predicate}': '{clause.variable}' never takes the value "
                                         f"'{clause.value}' (its values: {shown})")
        return Label(sae_id, feature_id, "accept", name=name, predicate=parsed and parsed.text,
                     variable=parsed and parsed.variable, value=parsed and parsed.value,
                     low=parsed and parsed.low, high=parsed and parsed.high, source=source, note=note)
    if verdict not in ("reject", "unsure"):
        raise InputError(f"verdict {verdict}: use reject or unsure")
    return Label(sae_id, feature_id, verdict, source=source, note=note)


def undo_label(db: Store, label_id: int) -> None:
    """Undo one labelling action (Review's `u`; store.labels.undo_label says how), unless its run's labels
    are frozen."""
    run_id = label_run_id(db, label_id)
    if run_id is None:
        raise StoreError(f"{db.path}: no label {label_id}")
    check_labels_open(db, run_id)
    store_undo_label(db, label_id)
