"""What the Review screen shows for one feature, computed from the store (no textual here).

`load_context` reads what every feature of an SAE shares, once: the dataset's examples and natural
variables as arrays (cached per dataset: a million examples take a second to read), the ranking,
suggestions, tuning curves and decoder. `load_feature` then reads one feature's activations and labels
and computes its panels with numpy in a few milliseconds.

Everything shown comes from the train and validation splits only: the test split is kept for
validation, so a person never labels a feature from the examples it will be tested on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from engine.analysis.dataset_arrays import SPLITS, TEST, DatasetArrays
from engine.analysis.predicates import VariableValues, evaluate, parse_predicate
from engine.analysis.tuning import (
    PeriEvent,
    SplitTuning,
    TuningInputs,
    peri_event,
    ranked_rows,
    split_tunings,
    tuned_variable,
    tuning_inputs,
)
from engine.errors import InputError
from store import Store
from store import review as queries
from store.datasets import load_natural_variables

TRACE_WINDOW = 240
"""Examples shown around a feature's strongest activation (fewer where test examples cut it short)."""
TOP_EXAMPLES = 12
SIGNATURE_UNITS = 10
"""Units listed for a feature without a validated signature (largest decoder weights)."""
MAX_TUNING_VARIABLES = 4


_DATASETS: dict[tuple[str, int], DatasetArrays] = {}
_DATASETS_LOCK = threading.Lock()


def dataset_arrays(db: Store, dataset: dict[str, Any]) -> DatasetArrays:
    """The dataset's arrays, read once per process (datasets never change once imported)."""
    key = (str(db.path), int(dataset["dataset_id"]))
    with _DATASETS_LOCK:
        if key in _DATASETS and _DATASETS[key].n_examples == dataset["n_examples"]:
            return _DATASETS[key]
    arrays = _read_dataset(db, dataset)
    with _DATASETS_LOCK:
        _DATASETS.clear()  # one dataset at a time: at 10⁶ examples each holds ~50 MB
        _DATASETS[key] = arrays
    return arrays


def _read_dataset(db: Store, dataset: dict[str, Any]) -> DatasetArrays:
    dataset_id, n = int(dataset["dataset_id"]), int(dataset["n_examples"])
    examples = queries.example_columns(db, dataset_id)
    split = examples["split"].replace_strict({s: i for i, s in enumerate(SPLITS)}, return_dtype=pl.Int8).to_numpy()
    kinds = dict(load_natural_variables(db, dataset_id).select("variable", "kind").iter_rows())
    numbers, codes, levels, counts = {}, {}, {}, {}
    fit = split != TEST
    for variable, kind in kinds.items():
        values = queries.variable_values(db, dataset_id, variable)
        rows = values["example_id"].to_numpy()
        if kind != "categorical":
            number = np.full(n, np.nan)
            number[rows] = values["value"].to_numpy()
            numbers[variable] = number
        if kind in ("categorical", "binary"):
            text = (values["category"] if kind == "categorical"
                    else values["value"].cast(pl.Int64).cast(pl.String))
            names = sorted(text.unique().drop_nulls().to_list(), key=_level_order)
            code = np.full(n, -1, dtype=np.int32)
            code[rows] = text.replace_strict({name: i for i, name in enumerate(names)}, return_dtype=pl.Int32,
                                             default=-1).to_numpy()
            codes[variable], levels[variable] = code, names
            present = fit & (code >= 0)
            counts[variable] = np.bincount(code[present], minlength=len(names))
    time_s = examples["time_s"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return DatasetArrays(dataset_id, dataset["name"], n, split, examples["trial_id"].to_numpy(), time_s, kinds,
                         numbers, codes, levels, counts, queries.unit_names(db, dataset_id))


def _level_order(level: str) -> tuple[int, float, str]:
    """Numeric levels in numeric order ('2' before '10'), then text levels alphabetically."""
    try:
        return (0, float(level), "")
    except ValueError:
        return (1, 0.0, level)


@dataclass(frozen=True)
class FeatureLags:
    """A feature of an SAE trained with --history L: how its encoder weight is shared among the lags."""

    shares: list[float]
    """Each lag's share of the feature's encoder norm (summing to 1), oldest lag first, the bin itself last;
    1/L each if the feature read every lag alike."""
    top_units: list[str]
    """Per lag, in the same order: the input unit whose encoder weight is largest there."""


def feature_lags(rows: pl.DataFrame) -> dict[int, FeatureLags]:
    """Every feature's FeatureLags from store.review.sae_encoder_lags's rows (lag 0 is the bin itself)."""
    out = {}
    for (feature_id,), part in rows.partition_by("feature_id", as_dict=True, maintain_order=True).items():
        part = part.sort("lag", descending=True)  # oldest first
        norms = part["norm"].to_numpy()
        total = float(norms.sum())
        shares = (norms / total).tolist() if total > 0 else [1 / len(norms)] * len(norms)
        out[int(feature_id)] = FeatureLags(shares, part["top_unit"].to_list())
    return out


@dataclass
class ReviewContext:
    """What every feature of one SAE shares; built once per Review screen."""

    run_id: int
    sae_id: int
    data: DatasetArrays
    order: list[int]
    """Feature ids in rank order: what j / k / g / G walk through."""
    rankings: dict[int, dict[str, Any]]
    features: dict[int, dict[str, Any]]
    suggestions: dict[int, list[dict[str, Any]]]
    tuning_curves: pl.DataFrame
    decoder: np.ndarray
    names: list[str]
    """Label names used so far on the run (the label box completes them)."""
    predicates: list[str]
    labelled: set[int] = field(default_factory=set)
    """Features with a current label when the context was read (Review starts at the first without)."""
    by_feature: bool = False
    """Whether activations_by_feature is current for this SAE (then a feature reads in ~2 ms)."""
    tuning_inputs: TuningInputs | None = None
    """What split tuning and peri-event histograms read (engine.analysis.tuning)."""
    bin_size_s: float | None = None
    lags: dict[int, FeatureLags] = field(default_factory=dict)
    """Per feature, its encoder's share of each lag (SAEs trained with --history only)."""

    def __post_init__(self) -> None:
        self._positions = {feature_id: i for i, feature_id in enumerate(self.order)}
        # Every feature's stored curve of a variable has the same bins: their edges, read once.
        first = self.tuning_curves.filter(pl.col("feature_id") == self.tuning_curves["feature_id"].min()) \
            if self.tuning_curves.height else self.tuning_curves
        self.curve_edges: dict[str, np.ndarray] = {
            variable: np.r_[part["low"].to_numpy(), part["high"].to_numpy()[-1:]]
            for (variable,), part in first.partition_by("variable", as_dict=True, maintain_order=True).items()}
        # The curves are read in feature order: a feature's rows are one slice, found by bisection (filtering
        # the SAE's whole table took a few milliseconds per feature, on every key).
        ids = self.tuning_curves["feature_id"].to_numpy() if self.tuning_curves.height else np.zeros(0, np.int64)
        self._curve_order = ids if bool(np.all(ids[1:] >= ids[:-1])) else None

    def curves_of(self, feature_id: int) -> pl.DataFrame:
        """The feature's stored tuning curves (every variable)."""
        if self._curve_order is None:
            return self.tuning_curves.filter(pl.col("feature_id") == feature_id)
        lo, hi = np.searchsorted(self._curve_order, [feature_id, feature_id + 1])
        return self.tuning_curves.slice(int(lo), int(hi - lo))

    def position(self, feature_id: int) -> int | None:
        """Index of the feature in rank order (None: not ranked)."""
        return self._positions.get(feature_id)


def load_context(db: Store, run_id: int, sae_id: int) -> ReviewContext:
    dataset = queries.run_dataset(db, run_id)
    data = dataset_arrays(db, dataset)
    saes = queries.run_saes(db, run_id)
    sae = saes.filter(pl.col("sae_id") == sae_id)
    if sae.is_empty():
        raise ValueError(f"SAE {sae_id} is not an SAE of run {run_id}")
    ranked = queries.sae_rankings(db, sae_id)
    suggestions: dict[int, list[dict[str, Any]]] = {}
    for row in queries.sae_suggestions(db, sae_id).iter_rows(named=True):
        suggestions.setdefault(row["feature_id"], []).append(row)
    names, predicates = queries.label_vocabulary(db, run_id)
    inputs = tuning_inputs(dataset, data, ranked_rows(db, dataset, run_id))
    return ReviewContext(
        run_id, sae_id, data, ranked["feature_id"].to_list(),
        {row["feature_id"]: row for row in ranked.iter_rows(named=True)},
        {row["feature_id"]: row for row in queries.feature_rows(db, sae_id).iter_rows(named=True)},
        suggestions, queries.sae_tuning_curves(db, sae_id),
        queries.decoder_matrix(db, sae_id, int(sae["d_sae"][0]), len(data.unit_names)), names, predicates,
        queries.labelled_features(db, sae_id), queries.activations_by_feature_current(db, sae_id), inputs,
        dataset["bin_size_s"], feature_lags(queries.sae_encoder_lags(db, sae_id)))


# -- one feature -----------------------------------------------------------------------------------------


@dataclass
class Trace:
    """A window of examples around the feature's strongest train/val activation."""

    example_ids: np.ndarray
    activation: np.ndarray
    time_s: np.ndarray
    peak: int
    """example_id of the strongest activation."""
    context: str | None
    """The predicate drawn beneath the trace (the current label's, else the first suggestion's)."""
    holds: np.ndarray
    """bool per example: the context predicate holds (all False without one)."""
    context_values: np.ndarray
    """The context variable per example (float, or level index for categories; NaN missing)."""
    context_is_level: bool = False
    """The context variable is categorical or binary: its values are levels, not magnitudes."""


@dataclass
class Tuning:
    variable: str
    kind: str
    labels: list[str]
    means: np.ndarray
    sem: np.ndarray | None
    n: np.ndarray
    marked: np.ndarray
    """bool per level/bin: named by the feature's suggestion for this variable."""


@dataclass
class FeaturePanel:
    """Everything Review shows for one feature."""

    sae_id: int
    feature_id: int
    rank: int | None
    n_ranked: int
    ranking: dict[str, Any] | None
    feature: dict[str, Any]
    suggestions: list[dict[str, Any]]
    label: dict[str, Any] | None
    """The current label (latest action not undone), or None."""
    n_actions: int
    """Labelling actions on the feature so far, undone ones included."""
    validation: dict[str, Any] | None
    """The validation of the current label, if it has one."""
    n_active_fit: int
    trace: Trace | None
    tuning: list[Tuning]
    top_examples: pl.DataFrame
    units: pl.DataFrame
    """unit_id, name, weight, coactivation, in_signature."""
    units_source: str
    """'signature' (from the validation of the current label) or 'decoder' (largest weights)."""
    splits: list[SplitTuning] = field(default_factory=list)
    """The tuning of one continuous variable split by each categorical one, the one to show first first."""
    peri_events: list[PeriEvent] = field(default_factory=list)
    """The peri-event histogram around each event of the dataset."""
    lags: FeatureLags | None = None
    """Its encoder's share of each lag (--history); None without temporal context."""


def load_feature(db: Store, context: ReviewContext, feature_id: int) -> FeaturePanel:
    sae_id, data = context.sae_id, context.data
    examples, values = queries.feature_activations(db, sae_id, feature_id, by_feature=context.by_feature)
    history = queries.feature_labels(db, sae_id, feature_id)
    label = next((row for row in history if not row["undone"]), None)
    validation = queries.label_validation(db, label["label_id"]) if label else None
    signature = queries.label_signature(db, label["label_id"]) if validation and validation["testable"] else None
    fit = data.fit[examples]
    examples, values = examples[fit], values[fit]
    suggestions = context.suggestions.get(feature_id, [])
    ranking = context.rankings.get(feature_id)
    return FeaturePanel(
        sae_id, feature_id, ranking["rank"] if ranking else None, len(context.order), ranking,
        context.features[feature_id], suggestions, label, len(history), validation, len(examples),
        _trace(data, examples, values, _context_predicate(label, suggestions)),
        _tunings(context, feature_id, examples, values, suggestions),
        _top_examples(data, examples, values, suggestions), *_units(context, feature_id, signature),
        *_split_and_peri(context, feature_id, examples, values, suggestions), context.lags.get(feature_id))


def _split_and_peri(context: ReviewContext, feature_id: int, examples: np.ndarray, values: np.ndarray,
                    suggestions: list[dict]) -> tuple[list[SplitTuning], list[PeriEvent]]:
    inputs = context.tuning_inputs
    if inputs is None:
        return [], []
    activation = np.zeros(context.data.n_examples, dtype=np.float32)
    activation[examples] = values  # train + val only: test bins stay 0 and are never read
    spreads = {}
    if not any(s["variable"] in context.curve_edges for s in suggestions):
        curves = context.curves_of(feature_id)
        spreads = {v: float(p["mean"].max() - p["mean"].min())
                   for (v,), p in curves.partition_by("variable", as_dict=True).items() if p["mean"].is_not_null().any()}
    variable, preferred = tuned_variable(suggestions, context.data, context.curve_edges, spreads)
    splits = ([] if variable is None else
              split_tunings(inputs, context.data, activation, variable, context.curve_edges[variable], preferred,
                            active=(examples, values)))
    peri = [peri_event(inputs, context.data, activation, event, context.bin_size_s) for event in inputs.events]
    return splits, peri


def _context_predicate(label: dict | None, suggestions: list[dict]) -> dict | None:
    if label and label["predicate"]:
        return label
    return suggestions[0] if suggestions else None


def predicate_holds(data: DatasetArrays, predicate: dict, rows: np.ndarray) -> np.ndarray:
    """Whether `predicate` (a label's or suggestion's; its text, one clause or a conjunction) holds on
    each example of `rows`; nowhere when its text does not parse against the dataset's variables."""
    try:
        parsed = parse_predicate(predicate["predicate"], data.kinds)
    except InputError:
        return np.zeros(len(rows), dtype=bool)

    def values(variable: str) -> VariableValues:
        categorical = data.kinds[variable] == "categorical"
        return VariableValues(None if categorical else data.numbers[variable][rows],
                              data.codes[variable][rows] if categorical else None, data.levels.get(variable, ()))

    return evaluate(parsed, values, len(rows)).holds


def _trace(data: DatasetArrays, examples: np.ndarray, values: np.ndarray, predicate: dict | None) -> Trace | None:
    if not len(examples):
        return None
    peak = int(examples[np.argmax(values)])
    start, stop = max(0, peak - TRACE_WINDOW // 2), min(data.n_examples, peak + TRACE_WINDOW // 2)
    # Stop at the first test example on either side: the test split stays unseen.
    test = np.flatnonzero(data.split[start:stop] == TEST) + start
    before, after = test[test < peak], test[test > peak]
    start = int(before[-1]) + 1 if len(before) else start
    stop = int(after[0]) if len(after) else stop
    window = np.arange(start, stop)
    dense = np.zeros(len(window), dtype=np.float32)
    lo, hi = np.searchsorted(examples, [start, stop])
    dense[examples[lo:hi] - start] = values[lo:hi]
    if predicate is None:
        return Trace(window, dense, data.time_s[window], peak, None, np.zeros(len(window), dtype=bool),
                     np.full(len(window), np.nan))
    variable = predicate["variable"]
    context = (data.numbers[variable][window] if variable in data.numbers
               else data.codes.get(variable, np.full(data.n_examples, -1))[window].astype(float))
    if variable in data.codes and variable not in data.numbers:
        context = np.where(context < 0, np.nan, context)
    return Trace(window, dense, data.time_s[window], peak, predicate["predicate"],
                 predicate_holds(data, predicate, window), context,
                 data.kinds.get(variable) in ("categorical", "binary"))


def _tunings(context: ReviewContext, feature_id: int, examples: np.ndarray, values: np.ndarray,
             suggestions: list[dict]) -> list[Tuning]:
    data, out, seen = context.data, [], set()
    curves = None
    for suggestion in _clauses(suggestions, data.kinds):
        variable = suggestion["variable"]
        if variable in seen or variable not in data.kinds:
            continue
        seen.add(variable)
        kind = data.kinds[variable]
        if kind in ("continuous", "circular"):
            if curves is None:
                curves = context.curves_of(feature_id)
            curve = curves.filter(pl.col("variable") == variable)
            if curve.is_empty():
                continue
            low, high = curve["low"].to_numpy(), curve["high"].to_numpy()
            mid = (low + high) / 2
            s_low, s_high = suggestion["low"], np.inf if suggestion["high"] is None else suggestion["high"]
            marked = ((mid >= s_low) | (mid < s_high)) if s_low > s_high else (mid >= s_low) & (mid < s_high)
            out.append(Tuning(variable, kind, [f"[{a:.3g}, {b:.3g})" for a, b in zip(low, high, strict=True)],
                              curve["mean"].to_numpy(),
                              curve["sem"].to_numpy(), curve["n"].to_numpy(), marked))
        else:
            code = data.codes[variable][examples]
            present = code >= 0
            sums = np.bincount(code[present], weights=values[present], minlength=len(data.levels[variable]))
            n = data.fit_level_counts[variable]
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
            marked = np.array([level == suggestion["value"] for level in data.levels[variable]])
            out.append(Tuning(variable, kind, list(data.levels[variable]), means, None, n, marked))
        if len(out) == MAX_TUNING_VARIABLES:
            break
    return out


def _clauses(suggestions: list[dict], kinds: dict[str, str]) -> list[dict]:
    """Suggestions with each conjunction replaced by its clauses (`position in [60, 80) and direction =
    decreasing` shows the position tuning with the field marked, then direction), in order."""
    out = []
    for suggestion in suggestions:
        if " and " not in suggestion["variable"]:
            out.append(suggestion)
            continue
        try:
            clauses = parse_predicate(suggestion["predicate"], kinds).clauses
        except InputError:  # a variable gone since ranking: nothing to draw
            continue
        out += [{"variable": c.variable, "value": c.value, "low": c.low, "high": c.high} for c in clauses]
    return out


def _top_examples(data: DatasetArrays, examples: np.ndarray, values: np.ndarray,
                  suggestions: list[dict]) -> pl.DataFrame:
    top = np.argsort(-values, kind="stable")[:TOP_EXAMPLES]
    rows = examples[top]
    frame = pl.DataFrame({"example": rows, "time_s": data.time_s[rows], "trial": data.trial[rows],
                          "split": [SPLITS[s] for s in data.split[rows]], "activation": values[top]})
    variables = list(dict.fromkeys(s["variable"] for s in suggestions if s["variable"] in data.kinds))
    for variable in variables[:3]:
        if variable in data.codes and data.kinds[variable] == "categorical":
            names = data.levels[variable]
            column = [names[c] if c >= 0 else None for c in data.codes[variable][rows]]
        else:
            column = [None if np.isnan(v) else float(v) for v in data.numbers[variable][rows]]
        frame = frame.with_columns(pl.Series(variable, column))
    return frame


def _units(context: ReviewContext, feature_id: int, signature: pl.DataFrame | None) -> tuple[pl.DataFrame, str]:
    names = context.data.unit_names
    if signature is not None and signature.height:
        chosen = signature.filter(pl.col("in_signature")).head(max(SIGNATURE_UNITS, 1))
        return chosen.with_columns(pl.col("unit_id").map_elements(lambda u: names[u], return_dtype=pl.String)
                                   .alias("name")).select("unit_id", "name", "weight", "coactivation",
                                                          "in_signature"), "signature"
    row = context.decoder[feature_id]
    top = np.argsort(-np.abs(row), kind="stable")[:SIGNATURE_UNITS]
    return pl.DataFrame({"unit_id": top.astype(np.int32), "name": [names[u] for u in top],
                         "weight": row[top].astype(np.float64), "coactivation": [None] * len(top),
                         "in_signature": [None] * len(top)},
                        schema_overrides={"coactivation": pl.Float64, "in_signature": pl.Boolean}), "decoder"
