"""How a run's validations are counted and tabulated (engine/validation/validation_summary.py): the two verdicts side
by side, bounds at the null's floor, the trials warning and the duplicate remark."""

from __future__ import annotations

from types import SimpleNamespace

from engine.validation.validation_summary import counts_line, figures_frame, outcome_line, verdict_counts


def row(label_id: int, feature_id: int, *, general: bool, specific: bool, trials: int = 24, **more) -> dict:
    return {"label_id": label_id, "sae_id": 1, "feature_id": feature_id, "predicate": "condition = 2",
            "attempt": 1, "testable": True, "mcc": 0.7, "mcc_ci_low": 0.55, "mcc_ci_high": 0.75,
            "n_test_trials": trials, "p_value": 0.02, "n_shifts": 199, "q_value": 0.03, "generalises": general,
            "signature_specific": specific, "duplicate_of": None, "reason": "…"} | more


DENSE = [  # a dense code: every label generalises, few signatures are specific
    row(1, 10, general=True, specific=True),
    row(2, 11, general=True, specific=False, p_value=1 / 200, q_value=0.004, attempt=2),
    row(3, 12, general=True, specific=False, trials=6),
    row(4, 13, general=False, specific=False, duplicate_of=1, mcc=0.2),
    {"label_id": 5, "sae_id": 1, "feature_id": 14, "predicate": None, "attempt": 1, "testable": False,
     "reason": "no predicate: not testable"},
]


def test_counts_keep_the_two_verdicts_apart() -> None:
    counts = verdict_counts(DENSE)
    assert counts == (5, 4, 3, 1, 1, 1, 1)
    assert counts_line(counts) == ("3 of 4 testable labels generalise; 1 of them is also signature-specific"
                                   "; 1 not testable; 1 weaker duplicate of another feature's label"
                                   "; 1 with fewer than 10 test trials behind the intervals")
    assert counts_line(verdict_counts(DENSE[:1])).startswith("1 of 1 testable label generalise; 1 of them is")


def test_the_outcome_line_says_both_counts_the_duplicates_and_the_family() -> None:
    outcome = SimpleNamespace(n_labels=8, n_testable=8, n_generalise=6, n_specific=2, n_validated=2,
                              n_duplicates=1, n_few_trials=2, n_family=11)
    assert outcome_line(outcome, outcome.n_family) == ("8 labels, 8 testable: 6 generalise, 2 also signature-specific (validated), "
                                     "1 weaker duplicate; 2 with too few test trials (under 10); q over 11 tests "
                                     "(every attempt of the run)")
    lone = SimpleNamespace(**{**vars(outcome), "n_specific": 3, "n_duplicates": 0, "n_few_trials": 0})
    assert "2 also signature-specific (validated), 1 signature-specific without generalising; q over" in \
        outcome_line(lone, 11)


def test_the_table_reads_bounds_warnings_verdicts_and_remarks() -> None:
    labels = {r["label_id"]: r for r in DENSE}
    table = {r["feature"]: r for r in figures_frame(DENSE, labels).to_dicts()}
    assert table[10]["generalises"] == "✓" and table[10]["signature specific"] == "✓"
    assert (table[11]["attempt"], table[11]["p"], table[11]["q"]) == (2, "< 0.005", "≤ 0.004")
    assert table[11]["generalises"] == "✓" and table[11]["signature specific"] == "✗"
    assert table[12]["test trials"] == "6 test trials (too few for a reliable interval)"
    assert table[13]["remark"] == "weaker duplicate of SAE 1 feature 10 (MCC 0.70)"
    assert table[14]["MCC [95% CI]"] == "not testable" and table[14]["generalises"] == "–"
    assert table[14]["remark"] == "no predicate: not testable"
    every = figures_frame([{**DENSE[1], "latest": True, "where_sql": "speed > 5", "around": None,
                            "created_at": None}], labels, attempts=True).row(0, named=True)
    assert (every["epoch"], every["latest"], every["in family"]) == ("speed > 5", "yes", "no")
