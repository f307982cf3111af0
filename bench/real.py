"""Real-data benchmark: the whole pipeline, as a user runs it, on every real recording in shared/data and on
the sample recording.

    .venv/bin/python bench/real.py                          # all recordings (~15 min on 2 cores)
    .venv/bin/python bench/real.py --only linear-track,chewie --top 8

Per recording, in a temporary folder, through the real `mini` command line:
1. import with the options a user would pick (each recording's line in RECORDINGS says which and why);
2. `mini train` with its defaults (settings chosen from the recording, early stopping), and beside it, on the
   same dataset, the settings that were fixed before (d_sae 512, k 8, batch 1024, 30 epochs) for comparison;
3. `mini rank`, then accept the first suggestion of the top N features (`mini label --accept 1`, N = --top);
4. `mini validate`; on the sample also, on a copy of the database, the top features relabelled with one
   another's labels (shuffled pairings) and two with the distractors, validated: none should generalise.
It reports train/val/test FVU against PCA and NMF (same number of components), dead fractions, the quality
flags, the rank of the first feature whose first suggestion is each known variable, validation outcomes (both
verdicts per label: generalises, signature-specific) and the wall time of each step. The sample recording also reports how many of its 15 planted latents are the
first suggestion of a top-30 feature (bench/rank.py's rule) and the decoder's MMCS against the planted
ensembles; the precipitation example (examples/precipitation_mlp.py) is run as a user runs it.

Progress goes to stderr; the last line on stdout is one JSON object. Nothing is written outside the
temporary folder (removed at the end); the recordings are read where they are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rank import matches  # noqa: E402
from store import Store  # noqa: E402

FIXED = ("--d-sae", "512", "--k", "8", "--batch-size", "1024", "--epochs", "30")
"""`mini train`'s settings before they were chosen from the recording."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shared_data() -> Path | None:
    for folder in (ROOT, *ROOT.parents):
        if (folder / "shared" / "data" / "README.md").is_file():
            return folder / "shared" / "data"
    return None


def mini(*args: str, cwd: Path, timeout: float = 3600) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mini {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done, seconds


# -- how each recording is imported ---------------------------------------------------------------------
def chewie_files(data: Path, folder: Path) -> tuple[Path, Path]:
    """The monkey M1 file as a count matrix and per-bin metadata (shared/data/README.md says how it is laid
    out): train and test parts one after the other, 31-row trials (the first and last partial), the target,
    the hand velocity and speed, and the time since the go cue (bins 15..45 at 10 ms)."""
    import scipy.io

    mat = scipy.io.loadmat(data / "dad-chewie" / "chewie_demo.mat")
    n_train, n_test = mat["Ytr"].shape[0], mat["Yte"].shape[0]
    counts = np.vstack([mat["Ytr"], mat["Yte"]]).astype(np.float32)  # 80 ms running sums: whole numbers
    velocity = np.vstack([mat["Xtr"], mat["Xte"]])
    target = np.concatenate([mat["Ttr"][:, 0], mat["Tte"][:, 0]])
    in_train = np.arange(n_train)
    in_test = np.r_[np.arange(11, 31), np.arange(n_test - 20) % 31]  # the test part starts 20 rows before a trial ends
    trial = np.r_[in_train // 31, 1 + in_train[-1] // 31 + np.r_[np.zeros(20, int), 1 + np.arange(n_test - 20) // 31]]
    degrees = {0: -95, 1: -50, 2: 9, 3: 108}  # mean velocity direction per label (README)
    meta = pl.DataFrame({
        "trial": trial, "time_after_go_s": 0.15 + 0.01 * np.r_[in_train % 31, in_test],
        "target": [f"{degrees[int(t)]} deg" for t in target], "velocity_x": velocity[:, 0],
        "velocity_y": velocity[:, 1], "speed": np.hypot(velocity[:, 0], velocity[:, 1]),
    })
    np.save(folder / "chewie_counts.npy", counts)
    meta.write_parquet(folder / "chewie_meta.parquet")
    return folder / "chewie_counts.npy", folder / "chewie_meta.parquet"


def sample_files(folder: Path) -> tuple[Path, Path]:
    from sample_data import SampleConfig, generate

    return generate(SampleConfig()).write(folder / "sample")


def import_args(name: str, data: Path | None, folder: Path) -> list[str]:
    """The import a user would run for each recording, and why."""
    if name == "sample":
        counts, meta = sample_files(folder)
        return ["import", str(counts), "--meta", str(meta), "--bin-size", "0.05"]
    assert data is not None
    nelpy = data / "nelpy-example-data"
    if name == "linear-track":  # runs as trials, 100 ms bins smoothed 100 ms: the usual place-field analysis
        return ["import-spikes", str(nelpy / "linear-track" / "spikes.mat"), "--behaviour",
                str(nelpy / "linear-track" / "trajectory.videoPositionTracking"), "--trials", "runs",
                "--bin-size", "0.1", "--smooth", "0.1"]
    if name == "w-maze":  # no lap structure on a maze: contiguous blocks; the same binning
        return ["import-spikes", str(nelpy / "w-maze" / "spikes.mat"), "--behaviour",
                str(nelpy / "w-maze" / "trajectory.videoPositionTracking"), "--bin-size", "0.1", "--smooth", "0.1"]
    if name == "chewie":
        counts, meta = chewie_files(data, folder)
        return ["import", str(counts), "--meta", str(meta), "--bin-size", "0.01"]
    if name == "nwb":  # the encoding task's table gives the trials; 100 ms bins
        return ["import-nwb", str(data / "pynapple-nwb" / "sub-4_ses-4_ecephys+image.nwb"), "--trials-table",
                "encoding_table", "--bin-size", "0.1"]
    raise ValueError(name)


KNOWN = {
    "linear-track": ("position", "direction"),
    "w-maze": ("position",),
    "chewie": ("target",),
    "nwb": ("stimCategory",),
    "sample": ("condition", "phase", "position", "speed", "reward"),
}
"""The variables a correct analysis finds in each recording (shared/data/README.md)."""
DISTRACTORS = {"sample": ("distractor", "house_light")}
"""Variables that no unit encodes (sample_data/generator.py plants them)."""


# -- what is read back ------------------------------------------------------------------------------------
def qc(db: Store, run_id: int) -> dict[str, dict[str, float]]:
    rows = db.records("SELECT q.split, q.fvu, q.pca_fvu, q.nmf_fvu, q.dead_fraction, q.l0_mean FROM qc q JOIN saes s"
                      " USING (sae_id) WHERE s.run_id = ? AND s.instance = 0", [run_id])
    return {r["split"]: {k: (None if r[k] is None else round(float(r[k]), 4)) for k in r if k != "split"}
            for r in rows}


def first_ranks(db: Store, sae_id: int, variables: tuple[str, ...]) -> dict[str, int | None]:
    """The rank of the first feature whose first suggestion names each variable, alone or in a conjunction
    (`position and direction` names both)."""
    rows = db.records("SELECT s.variable, min(r.rank) AS rank FROM rankings r JOIN suggestions s USING (sae_id, "
                      "feature_id) WHERE r.sae_id = ? AND s.position = 1 GROUP BY s.variable", [sae_id])
    found: dict[str, int] = {}
    for r in rows:
        for name in r["variable"].split(" and "):
            found[name] = min(found.get(name, r["rank"]), int(r["rank"]))
    return {v: found.get(v) for v in variables}


def suggestion_checks(db: Store, name: str, sae_id: int, run_id: int) -> dict[str, object]:
    """What issue 14 asks of the suggestions: how many name a variable with one value in the ranked bins, or
    a distractor; how many first suggestions are conjunctions; and each labelled variable's validations."""
    variables = db.records("SELECT variable, count(DISTINCT coalesce(category, CAST(value AS VARCHAR))) AS n"
                           " FROM natural_values GROUP BY variable")
    constant = {v["variable"] for v in variables if v["n"] < 2}
    named = [r["variable"] for r in db.records("SELECT variable FROM suggestions WHERE sae_id = ?", [sae_id])]
    distractors = set(DISTRACTORS.get(name, ()))
    tested = db.records("SELECT l.variable, count(*) AS labels, count(*) FILTER (WHERE v.testable) AS testable,"
                        " count(*) FILTER (WHERE v.generalises) AS generalise,"
                        " count(*) FILTER (WHERE v.validated) AS validated FROM current_validations v"
                        " JOIN current_labels l USING (label_id) JOIN saes s ON s.sae_id = v.sae_id"
                        " WHERE s.run_id = ? GROUP BY 1", [run_id])
    return {
        "suggestions": len(named),
        "suggestions_from_constant": sum(any(p in constant for p in n.split(" and ")) for n in named),
        "suggestions_from_distractor": sum(any(p in distractors for p in n.split(" and ")) for n in named),
        "first_suggestions_conjunctive": db.scalar("SELECT count(*) FROM suggestions WHERE sae_id = ? AND position = 1"
                                                   " AND variable LIKE '% and %'", [sae_id]),
        "validations_by_variable": {t["variable"]: {k: t[k] for k in ("labels", "testable", "generalise",
                                                                      "validated")} for t in tested},
    }


def validation_checks(db: Store, run_id: int) -> dict[str, object]:
    """What issue 15 asks of validation: per accepted label (latest attempt) its two verdicts, and the counts."""
    rows = db.records(
        "SELECT v.feature_id, v.predicate, v.testable, round(v.mcc, 3) AS mcc, round(v.mcc_ci_low, 3) AS mcc_low,"
        " v.n_test_trials, v.q_value, v.generalises, v.signature_specific, v.validated, v.duplicate_of"
        " FROM current_validations v JOIN current_labels l USING (label_id) JOIN saes s ON s.sae_id = v.sae_id"
        " WHERE s.run_id = ? ORDER BY v.feature_id", [run_id])
    tested = [r for r in rows if r["testable"]]
    return {
        "labels": len(rows), "testable": len(tested),
        "generalise": sum(bool(r["generalises"]) for r in tested),
        "signature_specific": sum(bool(r["signature_specific"]) for r in tested),
        "validated": sum(bool(r["validated"]) for r in tested),
        "weaker_duplicates": sum(r["duplicate_of"] is not None for r in tested),
        "test_trials": min((r["n_test_trials"] for r in tested), default=None),
        "attempts": db.scalar("SELECT count(*) FROM validations v JOIN saes s USING (sae_id) WHERE s.run_id = ?",
                              [run_id]),
        "per_label": [{"predicate": r["predicate"], "mcc": r["mcc"], "mcc_low": r["mcc_low"],
                       "q": None if r["q_value"] is None else round(r["q_value"], 4),
                       "generalises": r["generalises"], "specific": r["signature_specific"]} for r in rows],
    }


def unrelated_pairing(db_path: Path, run_id: int, labelled: list[dict]) -> list[tuple[int, str]]:
    """Each feature with the first of the next features' labels that is none of its own suggestions and whose
    predicate is unrelated to its first suggestion on the train and val bins (|phi| < 0.05 where both are
    measured): a wrong label, not a nested, overlapping or secondary one (a condition-3 feature that fires in
    the run phase, relabelled "phase = run", is partly right and may generalise). A feature left without such
    a label is dropped."""
    from engine.analysis.predicates import evaluate, long_values, parse_predicate
    from store.datasets import load_examples, load_natural_values, load_natural_variables
    from store.runs import get_run

    with Store.open(db_path, read_only=True) as db:
        dataset_id = get_run(db, run_id)["dataset_id"]
        values = load_natural_values(db, dataset_id)
        kinds = dict(load_natural_variables(db, dataset_id).select("variable", "kind").iter_rows())
        fit = load_examples(db, dataset_id)["split"].is_in(["train", "val"]).to_numpy()
    lookup = long_values(values, kinds, len(fit))

    def mask(text: str):
        return evaluate(parse_predicate(text, kinds), lookup, len(fit))

    def phi(a, b) -> float:
        both = fit & a.measured & b.measured
        x, y = a.holds[both].astype(float), b.holds[both].astype(float)
        return 0.0 if x.std() == 0 or y.std() == 0 else float(np.corrcoef(x, y)[0, 1])

    with Store.open(db_path, read_only=True) as db:
        sae_id = db.scalar("SELECT min(sae_id) FROM saes WHERE run_id = ?", [run_id])
        suggested = {(r["feature_id"], r["predicate"]) for r in db.records(
            "SELECT feature_id, predicate FROM suggestions WHERE sae_id = ?", [sae_id])}
    pairs = []
    for i, row in enumerate(labelled):
        own = mask(row["predicate"])
        for other in labelled[i + 1:] + labelled[:i]:
            if (row["feature_id"], other["predicate"]) in suggested:
                continue  # one of the feature's own significant associations: not a wrong label
            if abs(phi(own, mask(other["predicate"]))) < 0.05:
                pairs.append((row["feature_id"], other["predicate"]))
                break
    return pairs


def wrong_labels(db_path: Path, folder: Path, run_id: int, top: int) -> dict[str, int]:
    """On a copy of the database: each of the top features relabelled with another top feature's label that is
    unrelated to its own (unrelated_pairing) and two more with the distractors (variables nothing encodes),
    then validated. None of them should generalise."""
    import shutil

    copy = folder / "wrong.duckdb"
    shutil.copy(db_path, copy)
    with Store.open(copy, read_only=True) as db:
        sae_id = db.scalar("SELECT min(sae_id) FROM saes WHERE run_id = ?", [run_id])
        ranked = db.records("SELECT r.feature_id, s.predicate FROM rankings r JOIN suggestions s USING"
                            " (sae_id, feature_id) WHERE r.sae_id = ? AND s.position = 1 ORDER BY r.rank LIMIT ?",
                            [sae_id, top + 2])
        spread = db.records("SELECT quantile_cont(value, 0.25) AS low, quantile_cont(value, 0.75) AS high"
                            " FROM natural_values WHERE variable = 'distractor'")[0]
    labelled = ranked[:top]
    pairs = unrelated_pairing(copy, run_id, labelled)
    extra = [r["feature_id"] for r in ranked[top:]]
    distractors = ["house_light = 1", f"distractor in [{spread['low']:.3g}, {spread['high']:.3g})"]
    pairs += list(zip(extra, distractors, strict=False))
    for feature, predicate in pairs:
        mini("label", "--run", str(run_id), "--feature", str(feature), "--sae", str(sae_id), "--name", "wrong",
             "--predicate", predicate, "--db", str(copy), cwd=folder)
    mini("validate", "--run", str(run_id), "--db", str(copy), cwd=folder)
    with Store.open(copy, read_only=True) as db:
        generalise = db.scalar("SELECT count(*) FROM current_validations v JOIN current_labels l USING (label_id)"
                               " WHERE l.name = 'wrong' AND v.generalises")
    return {"wrong_labels": len(pairs), "wrong_labels_generalising": generalise}


def planted(db: Store, sae_id: int, truth_folder: Path) -> dict[str, object]:
    """Planted latents recovered in the top 30 and the decoder's MMCS, against the ground truth that the
    sample's files carry beside the counts (`mini import` does not read it: a user's import)."""
    top = db.records("SELECT r.rank, s.variable, s.value, s.low, s.high FROM rankings r JOIN suggestions s"
                     " USING (sae_id, feature_id) WHERE r.sae_id = ? AND s.position = 1 AND r.rank <= 30", [sae_id])
    latents = pl.read_parquet(truth_folder / "ground_truth_latents.parquet").to_dicts()
    recovered = sum(any(matches(s, latent) for s in top) for latent in latents)
    loadings = pl.read_parquet(truth_folder / "ground_truth_loadings.parquet")
    decoder = db.frame("SELECT feature_id, unit_id, weight FROM decoder WHERE sae_id = ?", [sae_id])
    n_units = int(max(loadings["unit_id"].max(), decoder["unit_id"].max())) + 1
    truth = np.zeros((int(loadings["latent_id"].max()) + 1, n_units))
    truth[loadings["latent_id"], loadings["unit_id"]] = loadings["weight"]
    rows = np.zeros((int(decoder["feature_id"].max()) + 1, n_units))
    rows[decoder["feature_id"], decoder["unit_id"]] = decoder["weight"]
    unit = lambda m: m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    return {"planted_in_top30": recovered, "planted": len(latents),
            "mmcs": round(float((unit(truth) @ unit(rows).T).max(1).mean()), 4)}


def accept_top(db_path: Path, folder: Path, run_id: int, top: int) -> int:
    with Store.open(db_path, read_only=True) as db:
        sae_id = db.scalar("SELECT min(sae_id) FROM saes WHERE run_id = ?", [run_id])
        features = [r["feature_id"] for r in db.records(
            "SELECT feature_id FROM rankings WHERE sae_id = ? AND suggestion IS NOT NULL ORDER BY rank LIMIT ?",
            [sae_id, top])]
    for feature in features:
        mini("label", "--run", str(run_id), "--feature", str(feature), "--sae", str(sae_id), "--accept", "1",
             "--db", str(db_path), cwd=folder)
    return len(features)


def run_recording(name: str, data: Path | None, folder: Path, top: int) -> dict[str, object]:
    work = folder / name
    work.mkdir()
    db_path = work / "bench.duckdb"
    seconds: dict[str, float] = {}
    log(f"{name}: import")
    _, seconds["import"] = mini(*import_args(name, data, work), "--name", name, "--db", str(db_path), cwd=work)
    log(f"{name}: train with the defaults")
    trained, seconds["train"] = mini("train", "--dataset", name, "--db", str(db_path), cwd=work)
    run_id = int(trained.stdout.strip().splitlines()[-1])
    log(f"{name}: train with the fixed settings of before, for comparison")
    fixed, seconds["train_fixed"] = mini("train", "--dataset", name, *FIXED, "--db", str(db_path), cwd=work)
    fixed_id = int(fixed.stdout.strip().splitlines()[-1])
    log(f"{name}: rank, accept the top {top}, validate")
    _, seconds["rank"] = mini("rank", "--run", str(run_id), "--db", str(db_path), cwd=work)
    start = time.perf_counter()
    accepted = accept_top(db_path, work, run_id, top)
    seconds["label"] = time.perf_counter() - start
    if accepted:  # nothing significant to accept: nothing to validate (reported as 0 accepted)
        _, seconds["validate"] = mini("validate", "--run", str(run_id), "--db", str(db_path), cwd=work)
    with Store.open(db_path, read_only=True) as db:
        sae_id = db.scalar("SELECT min(sae_id) FROM saes WHERE run_id = ?", [run_id])
        config = json.loads(db.scalar("SELECT config FROM runs WHERE run_id = ?", [run_id]))
        dataset = db.records("SELECT n_examples, n_units, n_trials FROM datasets")[0]
        flags = db.records("SELECT run_id, flag, split, message FROM quality_flags ORDER BY run_id, flag")
        validations = validation_checks(db, run_id)
        result: dict[str, object] = {
            **dataset, "chosen": config.get("chosen", {}),
            "epochs_trained": db.scalar("SELECT max(epoch) FROM train_log t JOIN saes s USING (sae_id)"
                                        " WHERE s.run_id = ?", [run_id]),
            "qc": qc(db, run_id), "qc_fixed": qc(db, fixed_id),
            "flags_at_import": [f["flag"] for f in flags if f["run_id"] is None],
            "flags": [f"{f['flag']}:{f['split']}" for f in flags if f["run_id"] == run_id],
            "flags_fixed": [f"{f['flag']}:{f['split']}" for f in flags if f["run_id"] == fixed_id],
            "first_rank_of": first_ranks(db, sae_id, KNOWN[name]),
            **suggestion_checks(db, name, sae_id, run_id),
            "accepted": accepted, "validations": validations,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
        }
        if name == "sample":
            result.update(planted(db, sae_id, work / "sample"))
    if name == "sample" and accepted:
        log(f"{name}: shuffled and distractor labels on a copy, validated")
        result.update(wrong_labels(db_path, work, run_id, top))
    log(f"{name}: {json.dumps(result)}")
    return result


def run_precipitation(folder: Path) -> dict[str, object]:
    """The example as its docstring runs it; its database is read back for QC and flags."""
    work = folder / "precipitation"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "precipitation_mlp.py"), "--out", str(work)],
                          capture_output=True, text=True, timeout=3600, cwd=folder)
    if done.returncode != 0:
        raise SystemExit(f"examples/precipitation_mlp.py failed: {done.stderr.strip()[-2000:]}")
    with Store.open(work / "precip.duckdb", read_only=True) as db:
        run_id = db.scalar("SELECT max(run_id) FROM runs")
        options = json.loads(db.scalar("SELECT options FROM datasets"))
        flags = db.records("SELECT flag, split FROM quality_flags WHERE run_id = ?", [run_id])
        return {"qc": qc(db, run_id), "flags": [f"{f['flag']}:{f['split']}" for f in flags],
                "mlp_accuracy": options.get("model", {}).get("held_out_accuracy"),
                "seconds": round(time.perf_counter() - start, 1)}


def targets(results: dict[str, dict]) -> dict[str, object]:
    """The issue's targets, each true or false."""
    out: dict[str, object] = {}
    for name, r in results.items():
        q, flags = r["qc"], set(r["flags"])
        test, val = q.get("test", {}), q.get("val", {})
        fvu_ok = test.get("fvu") is not None and test.get("pca_fvu") is not None and test["fvu"] <= test["pca_fvu"]
        dead_ok = (val.get("dead_fraction") or 0) < 0.05
        out[f"{name}_fvu_at_most_pca_or_flagged"] = fvu_ok or any(f.startswith("fvu_above") for f in flags)
        if name != "precipitation":
            out[f"{name}_dead_under_5pc_or_flagged"] = dead_ok or "dead_on_val:val" in flags
        out[f"{name}_fvu_above_1_flagged"] = all(
            (q.get(s, {}).get("fvu") or 0) <= 1 or f"fvu_above_one:{s}" in flags for s in ("val", "test"))
    for name, variables in (("linear-track", ("position", "direction")), ("w-maze", ("position",)),
                            ("chewie", ("target",))):
        if name in results:
            ranks = results[name]["first_rank_of"]
            out[f"{name.replace('-', '_')}_{'_and_'.join(variables)}_in_top10"] = all(
                ranks.get(v) is not None and ranks[v] <= 10 for v in variables)
    if "nwb" in results:
        r = results["nwb"]
        out["nwb_no_suggestion_from_a_constant_column"] = r["suggestions_from_constant"] == 0
        out["nwb_stimCategory_tested"] = r["validations_by_variable"].get("stimCategory", {}).get("testable", 0) > 0
    if "sample" in results:
        s = results["sample"]
        out["sample_planted_15_in_top30"] = s["planted_in_top30"] == s["planted"]
        out["sample_mmcs_at_least_0_95"] = s["mmcs"] >= 0.95
        out["sample_no_distractor_suggested"] = s["suggestions_from_distractor"] == 0
    # Issue 15: validation's two verdicts.
    if "linear-track" in results:
        v = results["linear-track"]["validations"]
        out["linear_track_5_of_top8_generalise"] = v["generalise"] >= 5
    if "chewie" in results:
        by = results["chewie"]["validations_by_variable"]
        out["chewie_target_label_generalises"] = any(
            n.get("generalise", 0) > 0 for variable, n in by.items() if "target" in variable.split(" and "))
    if "sample" in results:
        s = results["sample"]
        labels = s["validations"]["per_label"]
        out["sample_every_planted_label_generalises"] = all(r["generalises"] for r in labels)
        events = [r for r in labels if r["predicate"] in ("reward = 1", "phase = cue")]
        out["sample_event_labels_mcc_at_least_0_7"] = bool(events) and all(r["mcc"] >= 0.7 for r in events)
        out["sample_wrong_labels_never_generalise"] = s.get("wrong_labels_generalising") == 0
    return out


ALL = ("linear-track", "w-maze", "chewie", "nwb", "sample", "precipitation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated recordings (default: all of {', '.join(ALL)})")
    parser.add_argument("--top", type=int, default=8, help="top features whose first suggestion is accepted (8)")
    parser.add_argument("--dir", help="where the temporary folder goes")
    args = parser.parse_args()
    names = tuple(n.strip() for n in args.only.split(",")) if args.only else ALL
    unknown = set(names) - set(ALL)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))} (use {', '.join(ALL)})")
    data = shared_data()
    missing = [n for n in names if n not in ("sample", "precipitation") and data is None]
    if missing:
        raise SystemExit(f"shared/data is not beside the project (or above it): cannot run {', '.join(missing)}")
    started = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for name in names:
            results[name] = (run_precipitation(Path(folder)) if name == "precipitation"
                             else run_recording(name, data, Path(folder), args.top))
    load = os.getloadavg()[0]
    print(json.dumps({"bench": "real", "recordings": results, "targets": targets(results),
                      "total_seconds": round(time.perf_counter() - started, 1), "cpus": os.cpu_count(),
                      "load_average_1m": round(load, 2)}))


if __name__ == "__main__":
    main()
