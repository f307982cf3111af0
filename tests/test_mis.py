"""MIS on metadata: the embedding by hand, known-answer features, the chance control, the trial rule,
the draw distribution, the Δ of the paper, NaN reasons and determinism."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp

from engine.analysis.mis import MISConfig, _draw, draw_tasks, metadata_embedding, mis_scores

N, TRIAL_LEN = 4000, 100


@pytest.fixture(scope="module")
def recording():
    """4000 bins in 40 trials; a 4-level condition and an unrelated speed, both random per bin."""
    rng = np.random.default_rng(7)
    cond = rng.integers(0, 4, N)
    speed = rng.normal(size=N)
    trials = np.repeat(np.arange(N // TRIAL_LEN), TRIAL_LEN)
    emb, owners = metadata_embedding({"cond": ("categorical", cond, None),
                                      "speed": ("continuous", speed, None)})
    return {"rng": rng, "cond": cond, "speed": speed, "trials": trials, "emb": emb, "owners": owners}


def category_features(rec, n_features: int) -> np.ndarray:
    """Feature i fires (with a random strength) exactly when cond == i % 4."""
    strength = 1.0 + rec["rng"].random((N, n_features))
    return (rec["cond"][:, None] == np.arange(n_features) % 4) * strength


def test_metadata_embedding_hand_case():
    emb, owners = metadata_embedding({
        "speed": ("continuous", np.array([1.0, 2.0, 3.0, np.nan]), None),
        "cond": ("categorical", np.array([0, 1, 0, -1]), None),
        "heading": ("circular", np.array([0.0, 90.0, 180.0, np.nan]), 360.0),
        "reward": ("binary", np.array([0.0, 1.0, 1.0, 1.0]), None),
    })
    assert owners == ["speed", "cond", "cond", "heading", "heading", "reward"]
    z = math.sqrt(1.5)  # (x − 2) / std, std = √(2/3) over the three known values
    np.testing.assert_allclose(emb[:, 0], [-z, 0.0, z, 0.0])  # NaN -> the mean
    # raw one-hot variances 1/4 + 3/16 = 7/16, so the one-hot is scaled by 4/√7; missing -> all zeros
    s = 4 / math.sqrt(7)
    np.testing.assert_allclose(emb[:, 1:3], [[s, 0], [0, s], [s, 0], [0, 0]])
    # cos = (1, 0, −1, 0), sin = (0, 1, 0, 0): variances 1/2 + 3/16 = 11/16, scale 4/√11; NaN -> (0, 0)
    c = 4 / math.sqrt(11)
    np.testing.assert_allclose(emb[:, 3:5], [[c, 0], [0, c], [-c, 0], [0, 0]], atol=1e-12)
    np.testing.assert_allclose(emb[:, 5], (np.array([0, 1, 1, 1]) - 0.75) / math.sqrt(0.1875))
    for cols in (slice(1, 3), slice(3, 5), slice(5, 6)):  # every complete variable weighs 1
        assert emb[:, cols].var(axis=0).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="period"):
        metadata_embedding({"heading": ("circular", np.zeros(3), None)})


def test_feature_on_one_category_scores_near_one_and_names_its_variable(recording):
    acts = sp.csr_matrix(category_features(recording, 3)[:, [2]])  # fires exactly on cond == 2
    row = mis_scores(acts, recording["trials"], recording["emb"], recording["owners"],
                     MISConfig(n_tasks=400)).row(0, named=True)
    assert row["reason"] is None and row["n_tasks_run"] == 400
    assert row["mis"] >= 0.95
    assert row["mis_cond"] >= 0.95
    assert abs(row["mis_speed"] - 0.5) <= 0.1  # unrelated variable: chance
    assert row["mis_soft"] > 0.85


def test_dense_signed_feature_uses_quantiles(recording):
    # Nonzero almost everywhere and signed: pools are the top and bottom quantiles, not "silent".
    acts = (recording["speed"] + 0.05 * recording["rng"].normal(size=N))[:, None]
    row = mis_scores(acts, recording["trials"], recording["emb"], recording["owners"]).row(0, named=True)
    assert row["mis_speed"] == 1.0 and row["mis"] >= 0.95
    assert abs(row["mis_cond"] - 0.5) <= 0.15
    draws = draw_tasks(acts, recording["trials"], 0)
    assert acts[draws["expl_bottom"], 0].max() <= np.quantile(acts, 0.25) + 1e-12
    assert acts[draws["expl_top"], 0].min() >= np.quantile(acts, 0.75) - 1e-12


def test_shuffled_activation_control_sits_at_chance(recording):
    acts = category_features(recording, 20)
    rng = np.random.default_rng(3)
    shuffled = np.stack([rng.permutation(col) for col in acts.T], axis=1)
    args = (recording["trials"], recording["emb"], recording["owners"])
    real, control = mis_scores(acts, *args), mis_scores(shuffled, *args)
    assert real["mis"].min() >= 0.9  # the same features before shuffling: the control has work to undo
    assert abs(control["mis"].mean() - 0.5) <= 0.1
    assert abs(control["mis_cond"].mean() - 0.5) <= 0.1
    assert control["mis"].max() <= 0.75


def test_query_and_explanations_never_share_a_trial_and_query_is_least_extreme():
    # Active only in 3 of 6 trials: a draw of 10 that ignored trials would nearly always collide.
    rng = np.random.default_rng(1)
    n = 600
    trials = np.repeat(np.arange(6), 100)
    acts = np.where(trials < 3, rng.random(n), 0.0) * (rng.random(n) < 0.5)
    acts[trials == 4] = np.where(rng.random(100) < 0.5, 0.0, 0.001)  # near-silent trial: top tie-breaks
    draws = draw_tasks(sp.csc_matrix(acts[:, None]), trials, 0, MISConfig(n_tasks=500))
    assert not isinstance(draws, str)
    for side in ("top", "bottom"):
        query, expl = draws[f"query_{side}"], draws[f"expl_{side}"]
        assert expl.shape == (500, 9)
        assert not (trials[expl] == trials[query][:, None]).any()
        assert all(len(set(row)) == 9 for row in expl)
    assert (acts[draws["expl_top"]] > 0).all() and (acts[draws["expl_bottom"]] == 0).all()
    assert (acts[draws["query_top"]] <= acts[draws["expl_top"]].min(axis=1)).all()
    # the drawn top examples are from the top quarter of the active ones
    assert acts[draws["expl_top"]].min() >= np.quantile(acts[acts > 0], 0.75) - 1e-12


def test_draws_are_uniform_over_valid_draws():
    """Every set of K+1 pool members whose least extreme shares no trial with the rest is equally likely."""
    trial = np.array([0, 1, 0, 2, 1, 1, 2, 0, 1])  # a pool, most extreme first; index = example id
    k, n_tasks = 2, 120_000
    valid = []
    for combo in itertools.combinations(range(len(trial)), k + 1):
        query, expl = combo[-1], combo[:-1]
        if all(trial[e] != trial[query] for e in expl):
            valid.append((query, expl))
    query, expl = _draw(np.arange(len(trial)), trial, MISConfig(n_tasks=n_tasks, k=k),
                        np.random.default_rng(0), "top")
    seen = Counter((int(q), tuple(sorted(int(i) for i in e))) for q, e in zip(query, expl, strict=True))
    assert set(seen) == set(valid)
    counts = np.array([seen[v] for v in valid])
    expected = n_tasks / len(valid)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 80  # 38 degrees of freedom: p ≈ 1e-4 by chance


def test_scores_match_the_papers_delta(recording):
    """Δ from explicit mean squared distances on the drawn tasks gives exactly the reported scores."""
    acts = category_features(recording, 2)
    acts[:, 1] = recording["rng"].permutation(acts[:, 1])  # one informative, one at chance
    emb, owners, trials = recording["emb"], recording["owners"], recording["trials"]
    frame = mis_scores(acts, trials, emb, owners)

    def solved(delta):
        return np.where(np.abs(delta) <= 1e-9, 0.5, (delta > 0).astype(float))

    for f in range(2):
        d = draw_tasks(acts, trials, f)
        for variable, cols in (("", slice(None)), ("_cond", slice(0, 4)), ("_speed", slice(4, 5))):
            e = emb[:, cols]

            def s(query, expl, e=e):  # mean similarity: minus the mean squared distance to each example
                return -((e[query][:, None, :] - e[expl]) ** 2).sum(-1).mean(1)

            delta = ((s(d["query_top"], d["expl_top"]) - s(d["query_top"], d["expl_bottom"]))
                     - (s(d["query_bottom"], d["expl_top"]) - s(d["query_bottom"], d["expl_bottom"])))
            assert frame[f"mis{variable}"][f] == pytest.approx(solved(delta).mean())
            if not variable:
                assert frame["mis_soft"][f] == pytest.approx(np.mean(1 / (1 + np.exp(-delta))))


def test_unscorable_features_get_nan_and_a_reason(recording):
    trials = recording["trials"]
    acts = np.zeros((N, 4))
    acts[:5, 1] = 1.0  # too sparse
    acts[:50, 2] = np.linspace(1, 2, 50)  # plenty of examples, all in trial 0
    acts[:, 3] = category_features(recording, 1)[:, 0]  # fine
    frame = mis_scores(sp.csr_matrix(acts), trials, recording["emb"], recording["owners"])
    assert frame["mis"][:3].is_nan().all() and frame["mis_cond"][:3].is_nan().all()
    assert frame["n_tasks_run"].to_list() == [0, 0, 0, 100]
    assert frame["reason"][0] == "active on 0 examples, needs at least k+1 = 10"
    assert frame["reason"][1] == "active on 5 examples, needs at least k+1 = 10"
    assert frame["reason"][2] == "top examples all in one trial"
    assert frame["reason"][3] is None and frame["mis"][3] >= 0.9


def test_deterministic_under_the_seed_and_the_input_form(recording):
    acts = category_features(recording, 4)
    acts[:, 3] = recording["rng"].permutation(acts[:, 3])
    args = (recording["trials"], recording["emb"], recording["owners"])
    first = mis_scores(acts, *args, MISConfig(seed=5))
    assert first.equals(mis_scores(acts, *args, MISConfig(seed=5)))
    assert first.equals(mis_scores(sp.csr_matrix(acts), *args, MISConfig(seed=5)))  # dense == sparse
    assert not first.equals(mis_scores(acts, *args, MISConfig(seed=6)))
    changed = acts.copy()
    changed[:, 1:] = 0.0  # a feature's score does not depend on the other features
    assert first.row(0) == mis_scores(changed, *args, MISConfig(seed=5)).row(0)
