"""Associations of every SAE feature with every natural variable, all features at once.

The caller passes train + val examples only (the test split stays out): nonnegative sparse activations
[examples × features], a trial id per example, and the natural variables aligned to the examples. Every
number below comes from per-(feature, code) sums over the active entries only: never a dense
examples × features array, never a loop over features.

Rows (engine.analysis.selectivity says how variables are binned and fields and conjunctions chosen):
- categorical and binary variables: one row per (feature, value), 'in' = the value;
- continuous and circular variables: one row per (feature, variable) for the feature's field on its tuning
  curve, 'in' = the field, text 'in [lo, hi)' with the bins' readable edges;
- conjunctions (kind 'conjunction', variable 'x and v'): one row per feature and pair of a continuous or
  circular x with a categorical or binary v of 2 … max_conjunction_levels levels, 'in' = the field of x
  among bins with the chosen level of v, text 'x in [lo, hi) and v = c'.
Examples where a variable is missing (NaN, or category code -1) are left out of its rows: N examples
remain, n_in of them in, A where the feature is active (> 0), m_in = n_on active and in.

  statistic           the selectivity index SI = (μ_in − μ_out) / (μ_in + μ_out) of mean activations: what
                      suggestions and rankings sort by (engine.analysis.selectivity says why not an AUROC)
  selectivity         f_in / (f_in + f_out), f_in = m_in / n_in, f_out = (A - m_in) / (N - n_in) (on/off)
  auroc               P(act_in > act_out) + ½ P(tie) (midranks; every zero ties), effect_size = 2·auroc − 1
  contrast            (mean_in - mean_out) / (mean + 1e-12), in units of the feature's own mean
  mutual_information  bits between on/off and the variable's value or bin (conjunctions: the pair's cell)
  p_value             exact Monte-Carlo p, (1 + shuffles whose statistic reached the observed) / (1 + shuffles),
                      one-sided (more active in); the null repeats the choice of field and of conjunction.
                      A conjunction has two tests (it beats each part) and its p is the larger
  n_shuffles          shuffles behind the p-value: n_shuffles for all, then ×5 while a p-value has fewer than
                      `continue_below` shuffles reaching it, up to max_shuffles (sequential Monte Carlo,
                      Besag & Clifford 1991): a p below 1/201 is then a count, never an extrapolation
  q_value             FDR over all rows of the call as one family: engine.analysis.nulls.family_q_values (BH within
                      each variable or pair, times their number)

Undefined numbers (a feature never active, a value held by every example) are null.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from engine.analysis.active_entries import ActiveEntries
from engine.analysis.nulls import (
    Member,
    Trials,
    family_q_values,
    group_members,
    mi_bits,
    monte_carlo_p,
    null_exceedances,
    trial_codes,
)
from engine.analysis.selectivity import (
    Binning,
    Coded,
    Variable,
    conjunction,
    conjunction_statistic,
    encode,
    field_bounds,
    field_mask,
    field_statistic,
    tuning_means,
    value_statistic,
)

KINDS = ("categorical", "binary", "continuous", "circular")
EPS = 1e-12
"""Added to the feature's mean in the contrast denominator, so a dead feature gets 0, not 0/0."""

COLUMNS = {"feature_id": pl.Int32, "variable": pl.String, "kind": pl.String, "value": pl.String,
           "low": pl.Float64, "high": pl.Float64, "selectivity": pl.Float64, "auroc": pl.Float64,
           "contrast": pl.Float64, "mutual_information": pl.Float64, "statistic": pl.Float64,
           "p_value": pl.Float64, "q_value": pl.Float64, "effect_size": pl.Float64, "n_on": pl.Int64,
           "n_shuffles": pl.Int64}
CURVE_COLUMNS = {"feature_id": pl.Int32, "variable": pl.String, "bin": pl.Int32, "low": pl.Float64,
                 "high": pl.Float64, "mean": pl.Float64, "sem": pl.Float64, "n": pl.Int64}


@dataclass(frozen=True)
class AssociationConfig:
    binning: Binning = field(default_factory=Binning)
    """How continuous and circular variables are cut into bins (by default, bins chosen from the data)."""
    n_shuffles: int = 200
    """Shuffles every p-value gets first."""
    max_shuffles: int = 25_000
    """Most shuffles a p-value gets (its floor is then 1 / (1 + max_shuffles)): a variable that one feature
    of a thousand encodes needs more (`mini rank --max-shuffles`)."""
    continue_below: int = 1
    """A p-value gets five times more shuffles while fewer than this many reached its statistic."""
    fdr_level: float = 0.05
    """The FDR level of the decisions that more shuffles could change (rows with q at or above it)."""
    max_conjunction_levels: int = 8
    """Categorical or binary variables with 2 … this many levels pair with continuous ones in conjunctions;
    0: no conjunctions."""
    min_shift_fraction: float = 0.1
    """A circular shift moves a trial by at least this share of its length, either way round (0 … 0.5):
    a tiny shift of a slow series would leave it almost aligned and make the null too close to observed."""
    seed: int = 0
    """Seeds the shuffles (shuffle s uses [seed, s]), so results do not depend on n_threads."""
    n_threads: int | None = None
    """Threads running shuffles; None: every core this process may use."""

    def __post_init__(self) -> None:
        if self.n_shuffles < 0 or self.max_shuffles < self.n_shuffles or self.continue_below < 1 \
                or not 0 < self.fdr_level < 1 or self.max_conjunction_levels < 0 \
                or not 0 <= self.min_shift_fraction <= 0.5:
            raise ValueError(f"{self}: need 0 ≤ n_shuffles ≤ max_shuffles, continue_below ≥ 1, "
                             "max_conjunction_levels ≥ 0, 0 ≤ min_shift_fraction ≤ 0.5")


def _sums(entries: ActiveEntries, codes: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Observed per-(feature, code) sums for codes 0 … k-1 (k = missing, dropped)."""
    cells = entries.codes_at(codes)
    on = entries.table(cells, k + 1)[:, :k]
    n_in = np.bincount(codes, minlength=k + 1)[:k].astype(np.float64)
    zeros = n_in.sum() - on.sum(axis=1)
    # ranks among the non-missing examples; the global ones do when no active entry is on a missing one
    ranks = entries.global_ranks if on.sum() == len(cells) else entries.midranks(cells < k)
    rank_weights = ranks + (zeros[entries.feature] - 1) / 2  # rank among N examples, minus the zeros' share
    return {"on": on, "n_in": n_in, "sum": entries.table(cells, k + 1, entries.values)[:, :k],
            "ranks": entries.table(cells, k + 1, rank_weights)[:, :k], "zeros": zeros}


def _scores(s: dict[str, np.ndarray], inside: np.ndarray | None) -> dict[str, np.ndarray]:
    """selectivity, auroc, contrast, effect_size, n_on of 'in' against the rest: per code ([F, k], inside
    None) or for one set of codes per feature (inside [F, k] bool → [F])."""
    if inside is None:
        on, n_in, total, ranks = s["on"], s["n_in"][None, :], s["sum"], s["ranks"]
        expand = lambda x: x[:, None]  # noqa: E731
    else:
        on, n_in, total, ranks = ((x * inside).sum(axis=1) for x in (s["on"], s["n_in"][None, :], s["sum"],
                                                                      s["ranks"]))
        expand = lambda x: x  # noqa: E731
    big_n = s["n_in"].sum()
    active, zeros, all_sum = expand(s["on"].sum(axis=1)), expand(s["zeros"]), expand(s["sum"].sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        n_out = big_n - n_in
        f_in, f_out = on / n_in, (active - on) / n_out
        auroc = (n_in * (zeros - n_in) / 2 + ranks) / (n_in * n_out)
        contrast = (total / n_in - (all_sum - total) / n_out) / (all_sum / big_n + EPS)
        return {"selectivity": f_in / (f_in + f_out), "auroc": auroc, "contrast": contrast,
                "effect_size": 2 * auroc - 1, "n_on": on}


def _edge_text(x: float) -> str:
    return f"{x:.6g}"


def _field_edges(coded: Coded, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low and high edge of each feature's field (NaN where it has none)."""
    k, edges = coded.n_values, coded.edges
    start, length = field_bounds(mask, coded.variable.kind == "circular")
    end = start + length
    none = length == 0
    low = np.where(none, np.nan, edges[np.maximum(start, 0)])
    high = np.where(none, np.nan, edges[np.where(end > k, end - k, np.minimum(end, k))])
    return low, high


@dataclass
class _Test:
    """One row set of the result and the null members behind its p-values."""

    coded: Coded
    members: list[Member]
    partner: Coded | None = None
    """The categorical v of a conjunction (coded is its x)."""


def _tests(coded: list[Coded], trials: Trials, config: AssociationConfig) -> list[_Test]:
    tests: list[_Test] = []

    def key() -> int:
        return sum(len(t.members) for t in tests)

    for c in coded:
        if c.n_values == 0:
            continue
        categorical = c.variable.kind in ("categorical", "binary")
        statistic = value_statistic if categorical else field_statistic(c.variable.kind == "circular")
        by_trial, absent = trial_codes(c.codes, c.n_values, trials)
        tests.append(_Test(c, [Member(key(), c.n_values + 1, c.codes, by_trial, statistic, absent=absent)]))
    for x in coded:
        for v in coded:
            if x.variable.kind not in ("continuous", "circular") or x.n_values < 2 \
                    or v.variable.kind not in ("categorical", "binary") \
                    or not 2 <= v.n_values <= config.max_conjunction_levels:
                continue
            kx, kv, circular = x.n_values, v.n_values, x.variable.kind == "circular"
            first = key()
            (x_trials, x_absent), (v_trials, v_absent) = trial_codes(x.codes, kx, trials), trial_codes(v.codes, kv, trials)
            members = [Member(first, (kx + 1) * (kv + 1), x.codes, x_trials,
                              conjunction_statistic(kx, kv, circular, "x"), v.codes, kv + 1, x_absent),
                       Member(first + 1, (kv + 1) * (kx + 1), v.codes, v_trials,
                              conjunction_statistic(kx, kv, circular, "v"), x.codes, kx + 1, v_absent)]
            tests.append(_Test(x, members, v))
    return tests


def _p_values(entries: ActiveEntries, trials: Trials, tests: list[_Test], config: AssociationConfig,
              n_families: int, cancel: threading.Event | None = None) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per member key: observed statistic, Monte-Carlo p-value and the shuffles behind it.

    Every statistic gets n_shuffles. Then, while the FDR decision of a row is still open (q ≥ fdr_level)
    and fewer than continue_below shuffles reached one of its statistics, that statistic gets five times as
    many shuffles, on the features that hold such rows only, until max_shuffles (later shuffles continue
    the same seeded sequence). A p-value that many shuffles reached cannot become small, and a row already
    significant stays so as others' p-values fall (BH is monotone), so neither needs more."""
    members = [m for t in tests for m in t.members]

    def run(part: ActiveEntries, shuffles: range, tested: list[Member]):
        return null_exceedances(group_members(tested), part.rows, part.indptr, part.values, trials, shuffles,
                                config.min_shift_fraction, config.seed, config.n_threads, cancel)

    def p_values() -> dict[int, np.ndarray]:
        return {k: np.where(np.isnan(observed[k]), np.nan, monte_carlo_p(reached[k], used[k])) for k in observed}

    first = run(entries, range(config.n_shuffles), members)
    observed = {k: v[0] for k, v in first.items()}
    reached = {k: v[1].copy() for k, v in first.items()}
    used = {k: np.full(v[0].shape, config.n_shuffles, np.int64) for k, v in first.items()}
    done = config.n_shuffles
    while done < config.max_shuffles:
        p = p_values()
        rows = [np.maximum.reduce([p[m.key] for m in t.members]) for t in tests]  # a conjunction: the larger
        q = family_q_values(np.concatenate([r.ravel() for r in rows]),
                            np.concatenate([np.full(r.size, _family(t)) for r, t in zip(rows, tests, strict=True)]),
                            n_families)
        going, offset = {}, 0
        for t, r in zip(tests, rows, strict=True):
            open_ = q[offset:offset + r.size].reshape(r.shape) >= config.fdr_level
            offset += r.size
            # a conjunction's p is the larger of its two: more shuffles help only while both are at the floor
            floor = np.logical_and.reduce([(reached[m.key] < config.continue_below) & (used[m.key] == done)
                                           for m in t.members])
            for m in t.members:
                going[m.key] = open_ & floor
        features = np.flatnonzero(np.any([g.reshape(len(g), -1).any(axis=1) for g in going.values()], axis=0))
        if not len(features):
            break
        more = min(done * 5, config.max_shuffles) if done else config.max_shuffles
        # only the tests still open on these features: each member's statistic is its own, and a shuffle is
        # seeded by its index, so leaving the settled ones out changes no count (and saves a pass over the
        # entries per group left out: the late rounds run thousands of shuffles on a few features)
        open_members = [m for m in members if going[m.key][features].any()]
        extra = run(entries.subset(features), range(done, more), open_members)
        for k, (_, count) in extra.items():
            keep = going[k][features]
            reached[k][features] += np.where(keep, count, 0)
            used[k][features] = np.where(keep, more, used[k][features])
        done = more
    # an undefined statistic (a feature never active where the variable has a value) is no test: NaN p,
    # left out of the FDR family
    p = p_values()
    return {k: (observed[k], p[k], used[k]) for k in observed}


CONJUNCTIONS = "conjunctions"
"""The FDR sub-family of every conjunction row (one sub-family per pair would divide 5 % by many more)."""


def _family(test: _Test) -> str:
    """The FDR sub-family of a test's rows: its variable, or CONJUNCTIONS."""
    return test.coded.variable.name if test.partner is None else CONJUNCTIONS


def _value_frame(entries: ActiveEntries, test: _Test, result) -> pl.DataFrame:
    c = test.coded
    observed, p, used = result[test.members[0].key]
    s = _sums(entries, c.codes, c.n_values)
    n_features, k = s["on"].shape
    return pl.DataFrame({
        "feature_id": np.repeat(np.arange(n_features), k), "value": np.tile(np.array(c.labels), n_features),
        "low": np.full(n_features * k, np.nan), "high": np.full(n_features * k, np.nan),
        **{name: x.ravel() for name, x in _scores(s, None).items()},
        "mutual_information": np.repeat(mi_bits(s["on"], s["n_in"]), k),
        "statistic": observed.ravel(), "p_value": p.ravel(), "n_shuffles": used.ravel(),
    })


def _field_frame(entries: ActiveEntries, test: _Test, result) -> pl.DataFrame:
    c = test.coded
    observed, p, used = result[test.members[0].key]
    s = _sums(entries, c.codes, c.n_values)
    mask = field_mask(tuning_means(s["sum"], s["n_in"][None, :]), c.variable.kind == "circular")
    low, high = _field_edges(c, mask)
    texts = [None if np.isnan(lo) else f"in [{_edge_text(lo)}, {_edge_text(hi)})"
             for lo, hi in zip(low, high, strict=True)]
    return pl.DataFrame({
        "feature_id": np.arange(len(low)), "value": pl.Series(texts, dtype=pl.String), "low": low, "high": high,
        **_scores(s, mask), "mutual_information": mi_bits(s["on"], s["n_in"]),
        "statistic": observed, "p_value": p, "n_shuffles": used,
    })


def _conjunction_frame(entries: ActiveEntries, test: _Test, result) -> pl.DataFrame:
    x, v = test.coded, test.partner
    kx, kv = x.n_values, v.n_values
    pair = np.where((x.codes < kx) & (v.codes < kv), x.codes * kv + v.codes, kx * kv)
    s = _sums(entries, pair, kx * kv)
    n_features = s["on"].shape[0]
    chosen = conjunction(s["sum"].reshape(-1, kx, kv), s["n_in"].reshape(kx, kv), x.variable.kind == "circular")
    inside = (chosen.mask[:, :, None] & (np.arange(kv)[None, None, :] == chosen.level[:, None, None]))
    low, high = _field_edges(x, chosen.mask)
    (_, p_x, used_x), (_, p_v, used_v) = (result[m.key] for m in test.members)
    texts = [None if np.isnan(lo) else
             f"{x.variable.name} in [{_edge_text(lo)}, {_edge_text(hi)}) and {v.variable.name} = {v.labels[c]}"
             for lo, hi, c in zip(low, high, chosen.level, strict=True)]
    return pl.DataFrame({
        "feature_id": np.arange(n_features), "value": pl.Series(texts, dtype=pl.String), "low": low, "high": high,
        **_scores(s, inside.reshape(n_features, -1)), "mutual_information": mi_bits(s["on"], s["n_in"]),
        "statistic": chosen.overall, "p_value": np.maximum(p_x, p_v), "n_shuffles": np.minimum(used_x, used_v),
    }).with_columns(variable=pl.lit(f"{x.variable.name} and {v.variable.name}"), kind=pl.lit("conjunction"))


def associate(activations, trial_ids: np.ndarray, variables: list[Variable],
              config: AssociationConfig = AssociationConfig(), cancel: threading.Event | None = None) -> pl.DataFrame:
    """One row per (feature, value, field or conjunction), columns COLUMNS; see the module docstring.
    `cancel` set stops it between blocks of shuffles (engine.errors.Cancelled)."""
    entries = ActiveEntries.build(activations)
    trial_ids = np.asarray(trial_ids)
    if len(trial_ids) != entries.n_rows:
        raise ValueError(f"{len(trial_ids)} trial ids for {entries.n_rows} examples")
    for v in variables:
        if v.kind not in KINDS:
            raise ValueError(f"variable '{v.name}': kind {v.kind!r} is not one of {', '.join(KINDS)}")
    trials = Trials.from_ids(trial_ids)
    coded = [encode(v, entries.n_rows, config.binning) for v in variables]
    tests = _tests(coded, trials, config)
    if not tests:
        return pl.DataFrame(schema=COLUMNS)
    single = [t for t in tests if t.partner is None]
    pairs = [t for t in tests if t.partner is not None]
    n_families = len(single) + bool(pairs)
    result = _p_values(entries, trials, single, config, n_families, cancel)
    frames = []
    for test in single:
        categorical = test.coded.variable.kind in ("categorical", "binary")
        frame = (_value_frame if categorical else _field_frame)(entries, test, result)
        frames.append(frame.with_columns(variable=pl.lit(test.coded.variable.name),
                                         kind=pl.lit(test.coded.variable.kind)))
    out = pl.concat(frames, how="diagonal_relaxed")
    significant = family_q_values(out["p_value"].to_numpy(), out["variable"].to_numpy(), n_families) < config.fdr_level
    found = out.filter(pl.Series(significant) & (pl.col("statistic") > 0))
    for test in pairs:
        result.update(_conjunction_p_values(entries, trials, test, found, config, n_families, cancel))
        frames.append(_conjunction_frame(entries, test, result))
    out = pl.concat(frames, how="diagonal_relaxed")
    families = np.where(out["kind"].to_numpy() == "conjunction", CONJUNCTIONS, out["variable"].to_numpy())
    out = out.with_columns(q_value=pl.Series(family_q_values(out["p_value"].to_numpy(), families, n_families)))
    return _finish(out, COLUMNS)


def _conjunction_p_values(entries: ActiveEntries, trials: Trials, test: _Test, found: pl.DataFrame,
                          config: AssociationConfig, n_families: int,
                          cancel: threading.Event | None = None) -> dict[int, tuple]:
    """A conjunction's two tests, for the features with a significant field of x and a significant value
    of v (both parts already found); NaN elsewhere: a conjunction is only offered over two parts, and
    testing every feature and pair would cost a pass over all entries per pair and shuffle."""
    x, v = test.coded.variable.name, test.partner.variable.name
    with_x = set(found.filter(pl.col("variable") == x)["feature_id"].to_list())
    features = np.array(sorted(with_x & set(found.filter(pl.col("variable") == v)["feature_id"].to_list())),
                        dtype=np.int64)
    out = {}
    tested = _p_values(entries.subset(features), trials, [test], config, n_families, cancel) if len(features) else {}
    for member in test.members:
        full = [np.full(entries.n_features, np.nan), np.full(entries.n_features, np.nan),
                np.zeros(entries.n_features, np.int64)]
        if len(features):
            for i, part in enumerate(tested[member.key]):
                full[i][features] = part
        out[member.key] = tuple(full)
    return out


def tuning_curves(activations, variables: list[Variable],
                  config: AssociationConfig = AssociationConfig()) -> pl.DataFrame:
    """Mean activation ± SEM per bin of each continuous or circular variable, every feature; missing
    examples left out. SEM = sample SD (ddof 1, zeros included) / √n; null where n < 2."""
    entries = ActiveEntries.build(activations)
    frames = []
    for variable in variables:
        if variable.kind not in ("continuous", "circular"):
            continue
        c = encode(variable, entries.n_rows, config.binning)
        k = c.n_values
        if k == 0:
            continue
        n_in = np.bincount(c.codes, minlength=k + 1)[:k].astype(np.float64)
        cells = entries.codes_at(c.codes)
        total = entries.table(cells, k + 1, entries.values)[:, :k]
        squares = entries.table(cells, k + 1, entries.values**2)[:, :k]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = total / n_in
            variance = np.maximum(squares - total * mean, 0.0) / (n_in - 1)
            sem = np.where(n_in > 1, np.sqrt(variance / n_in), np.nan)
        frames.append(pl.DataFrame({
            "feature_id": np.repeat(np.arange(entries.n_features), k), "variable": variable.name,
            "bin": np.tile(np.arange(k), entries.n_features), "low": np.tile(c.edges[:-1], entries.n_features),
            "high": np.tile(c.edges[1:], entries.n_features), "mean": mean.ravel(), "sem": sem.ravel(),
            "n": np.tile(n_in, entries.n_features),
        }))
    return _finish(pl.concat(frames, how="diagonal_relaxed"), CURVE_COLUMNS) if frames else \
        pl.DataFrame(schema=CURVE_COLUMNS)


def _finish(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Columns in schema order and types, NaN (undefined) as null."""
    return frame.select(
        pl.col(name).cast(dtype).fill_nan(None) if dtype == pl.Float64 else pl.col(name).cast(dtype)
        for name, dtype in schema.items()
    )
