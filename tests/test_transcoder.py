"""Transcoders (`mini train --inputs/--targets`) and unit attributes (`--unit-meta`), through the real CLI on real
DuckDB files and the sample recording's planted ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from engine.errors import InputError
from engine.sae.model import SAEConfig, SAEStack
from engine.sae.unit_selection import parse_selection, resolve_selection
from sample_data import SampleConfig, generate
from tests.conftest import run_cli

N_UNITS = 120


def _unit_meta(path: Path, names: list[str]) -> Path:
    """area CA1 for the first half of the units, CA3 for the second; shank = index // 30."""
    pl.DataFrame({"unit": names, "area": ["CA1" if i < len(names) // 2 else "CA3" for i in range(len(names))],
                  "shank": [i // 30 for i in range(len(names))]}).write_csv(path)
    return path


def _sql(db: Path, query: str, cwd: Path) -> list[dict]:
    result = run_cli("sql", "--db", str(db), "--format", "json", query, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A short sample recording imported with unit attributes: (folder, database, unit names)."""
    folder = tmp_path_factory.mktemp("transcoder_small")
    recording = generate(SampleConfig(n_bins=3000))
    recording.write(folder / "data")
    meta = _unit_meta(folder / "units.csv", recording.unit_names)
    db = folder / "small.duckdb"
    result = run_cli("import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "small",
                     "--unit-meta", str(meta), "--db", str(db), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, db, recording.unit_names


# --------------------------------------------------------------------------- selections


def test_selections_resolve_to_units_in_dataset_order():
    names = [f"u{i}" for i in range(10)]
    attributes = {"area": {i: "CA1" if i < 5 else "CA3" for i in range(10)}, "shank": {i: str(i % 2) for i in range(10)}}

    def pick(text: str) -> list[int]:
        return resolve_selection(parse_selection("--inputs", text), names, attributes).tolist()

    assert pick("7,0-2,2") == [0, 1, 2, 7]
    assert pick("u9,u3") == [3, 9]
    assert pick("area=CA3") == [5, 6, 7, 8, 9]
    assert pick("area=CA1,shank=1") == [1, 3]
    assert pick("area=CA1|CA3,shank=0") == [0, 2, 4, 6, 8]
    numbered = ["10", "x", "3"]  # names that look like indices need name:
    assert resolve_selection(parse_selection("--targets", "name:10,3"), numbered).tolist() == [0, 2]
    assert resolve_selection(parse_selection("--targets", "1-2"), numbered).tolist() == [1, 2]


@pytest.mark.parametrize(("inputs", "targets", "says"), [
    ("5-2", "0", "--inputs 5-2: bad range '5-2' (its start is after its end)"),
    ("0-120", "0", "--inputs 0-120: unit index 120 is out of range (the dataset has 120 units, 0-119"),
    ("0", "unit_999", "--targets unit_999: no unit named 'unit_999'"),
    ("depth=3", "0", "--inputs depth=3: the dataset's units have no attribute 'depth' (attributes: area, shank)"),
    ("area=CA9", "0", "--inputs area=CA9: no unit has area = CA9 (values of area: CA1, CA3)"),
    ("area=CA1,shank=3", "0", "--inputs area=CA1,shank=3: no unit matches every term (an empty selection)"),
    (" ", "0", "--inputs: an empty selection"),
    ("0,,3", "1", "--inputs 0,,3: an empty term"),
    ("area=CA1,4", "1", "--inputs area=CA1,4: mixes key=value terms with units"),
    ("0-9", None, "--inputs without --targets: a transcoder needs both"),
    (None, "0-9", "--targets without --inputs: a transcoder needs both"),
])
def test_bad_selections_are_refused_in_one_line_and_write_nothing(small, inputs, targets, says):
    folder, db, _ = small
    args = ["train", "--dataset", "small", "--epochs", "1", "--db", str(db)]
    args += [] if inputs is None else ["--inputs", inputs]
    args += [] if targets is None else ["--targets", targets]
    result = run_cli(*args, cwd=folder)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mini: error: {says}"), result.stderr
    assert _sql(db, "SELECT count(*) AS n FROM runs", folder) == [{"n": 0}]


# --------------------------------------------------------------------------- --unit-meta


def test_unit_meta_round_trip_csv_and_parquet(small, tmp_path):
    folder, db, _ = small
    stored = _sql(db, "SELECT key, value, count(*) AS n, min(unit_id) AS first, max(unit_id) AS last "
                      "FROM unit_attributes GROUP BY ALL ORDER BY ALL", folder)
    assert stored == [{"key": "area", "value": "CA1", "n": 60, "first": 0, "last": 59},
                      {"key": "area", "value": "CA3", "n": 60, "first": 60, "last": 119},
                      *({"key": "shank", "value": str(s), "n": 30, "first": 30 * s, "last": 30 * s + 29}
                        for s in range(4))]
    # Parquet, units by index in any order, a gap (null) meaning "no value" for that unit.
    meta = pl.DataFrame({"unit_id": list(range(N_UNITS))[::-1],
                         "layer": [None if i == 5 else f"L{i % 3}" for i in range(N_UNITS)][::-1]})
    meta.write_parquet(tmp_path / "units.parquet")
    other = tmp_path / "other.duckdb"
    result = run_cli("import", str(folder / "data/counts.npz"), "--meta", str(folder / "data/metadata.parquet"),
                     "--unit-meta", str(tmp_path / "units.parquet"), "--db", str(other), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _sql(other, "SELECT unit_id, value FROM unit_attributes WHERE key = 'layer' ORDER BY unit_id", tmp_path)
    assert len(rows) == N_UNITS - 1 and 5 not in [r["unit_id"] for r in rows]
    assert all(r["value"] == f"L{r['unit_id'] % 3}" for r in rows)


@pytest.mark.parametrize(("table", "says"), [
    ("unit,area\n", "no rows"),
    ("", "file is empty"),
    ("neuron,area\nunit_000,CA1\n", "no column naming the unit"),
    ("unit\n" + "".join(f"unit_{i:03d}\n" for i in range(N_UNITS)), "no attribute columns beside 'unit'"),
    ("unit,area\n" + "".join(f"unit_{i:03d},CA1\n" for i in range(N_UNITS - 1)),
     "1 unit(s) of the dataset have no row (first: unit_119)"),
    ("unit,area\nunit_000,CA1\nunit_000,CA3\n", "rows 1 and 2 both describe unit unit_000"),
    ("unit,area\nunit_000,CA1\nneuron_7,CA3\n", "row 2: no unit named 'neuron_7' in the dataset"),
    ("unit,area\n0,CA1\n120,CA3\n", "row 2: unit index 120 is not a unit of the dataset"),
    ("unit,area\n0.5,CA1\n", "column 'unit' holds Float64"),
    ("unit,area\nunit_000,CA1\n,CA3\n", "row 2 has no unit"),
    ("unit,area\n" + "".join(f"unit_{i:03d},{'CA1|CA3' if i == 4 else 'CA1'}\n" for i in range(N_UNITS)),
     "row 5, column 'area': value 'CA1|CA3' holds '|', which --inputs and --targets read as an operator"),
    ('unit,layer\n' + "".join(f'unit_{i:03d},"CA1, deep"\n' for i in range(N_UNITS)),
     "row 1, column 'layer': value 'CA1, deep' holds ','"),
    ('unit,"a=b"\n' + "".join(f"unit_{i:03d},x\n" for i in range(N_UNITS)),
     "column 'a=b': an attribute's name cannot hold '='"),
])
def test_bad_unit_meta_is_refused_before_the_database_is_made(small, tmp_path, table, says):
    folder, _, _ = small
    path = tmp_path / "units.csv"
    path.write_text(table)
    db = tmp_path / "new.duckdb"
    result = run_cli("import", str(folder / "data/counts.npz"), "--meta", str(folder / "data/metadata.parquet"),
                     "--unit-meta", str(path), "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mini: error: {path}") and says in lines[0], result.stderr
    assert not db.exists()


# --------------------------------------------------------------------------- the model


def test_a_transcoders_code_reads_its_inputs_alone_and_decodes_its_targets():
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.rand(256, 7, generator=generator), torch.rand(256, 5, generator=generator)
    stack = SAEStack(SAEConfig(architecture="topk", d_sae=16, ks=(3, 3)), 7, (0, 1), d_out=5)
    stack.initialise_from_data(torch.cat([inputs, targets], 1))
    assert stack.W_enc.shape == (2, 16, 7) and stack.W_dec.shape == (2, 16, 5) and stack.b_dec.shape == (2, 5)
    code = stack.encode(torch.cat([inputs, targets], 1))
    other = stack.encode(torch.cat([inputs, torch.zeros_like(targets)], 1))
    assert torch.equal(code.latent, other.latent) and torch.equal(code.value, other.value)
    out = stack(torch.cat([inputs, targets], 1))
    assert out.reconstruction.shape == (2, 256, 5)
    moved = stack(torch.cat([inputs, targets + 1], 1))
    assert float(moved.per_sae_reconstruction.min()) > float(out.per_sae_reconstruction.max())  # loss on targets
    out.loss.backward()
    assert stack.b_dec.grad is not None and stack.W_enc.grad is not None and float(stack.W_enc.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="no target units"):
        SAEStack(SAEConfig(d_sae=8, ks=(2,)), 4, (0,), d_out=0)


def test_a_plain_sae_is_what_it_was():
    """d_out left out: the tied initialisation (encoder = decoder) and b_dec centring as before the transcoder."""
    stack = SAEStack(SAEConfig(d_sae=12, ks=(2,)), 6, (3,))
    w = torch.randn(12, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(stack.W_dec[0], w / torch.linalg.vector_norm(w, dim=1, keepdim=True))
    assert torch.equal(stack.W_enc, stack.W_dec) and not stack.transcoder and stack.d_out == 6
    assert "input_centre" not in stack.state_dict()


# --------------------------------------------------------------------------- end to end on planted ensembles


def _mmcs(decoder: list[dict], loadings: pl.DataFrame, targets: np.ndarray) -> float:
    """Mean over planted ensembles (with members among the targets) of the best cosine with a decoder row,
    both over the target units."""
    d_sae = 1 + max(r["feature_id"] for r in decoder)
    weights = np.zeros((d_sae, N_UNITS))
    for r in decoder:
        weights[r["feature_id"], r["unit_id"]] = r["weight"]
    truth = np.zeros((int(loadings["latent_id"].max()) + 1, N_UNITS))
    truth[loadings["latent_id"].to_numpy(), loadings["unit_id"].to_numpy()] = loadings["weight"].to_numpy()
    weights, truth = weights[:, targets], truth[:, targets]
    truth = truth[np.linalg.norm(truth, axis=1) > 0]
    cosines = (truth / np.linalg.norm(truth, axis=1, keepdims=True)) @ (
        weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)).T
    return float(cosines.max(axis=1).mean())


@pytest.mark.slow
def test_a_transcoder_between_halves_recovers_the_ensembles_and_beats_ridge(tmp_path):
    recording = generate(SampleConfig())
    recording.write(tmp_path / "data")
    meta = _unit_meta(tmp_path / "units.csv", recording.unit_names)
    db = str(tmp_path / "t.duckdb")
    steps = [["import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "s", "--unit-meta", str(meta)],
             ["train", "--dataset", "s", "--inputs", "area=CA3", "--targets", "area=CA1"],
             ["rank", "--run", "1", "--max-shuffles", "1000"]]  # the late rounds of p-values are not tested here
    said = []
    for args in steps:
        result = run_cli(*args, "--db", db, cwd=tmp_path, timeout=900)
        assert result.returncode == 0, result.stderr
        said.append(result.stderr)
    assert "train: transcoder: inputs 60 units, targets 60 units (area=CA3 → area=CA1)" in said[1]
    targets = np.arange(60)
    units = _sql(Path(db), "SELECT role, min(unit_id) AS lo, max(unit_id) AS hi, count(*) AS n FROM run_units "
                           "GROUP BY role ORDER BY role", tmp_path)
    assert units == [{"role": "input", "lo": 60, "hi": 119, "n": 60}, {"role": "target", "lo": 0, "hi": 59, "n": 60}]
    decoder = _sql(Path(db), "SELECT feature_id, unit_id, weight FROM decoder", tmp_path)
    assert {r["unit_id"] for r in decoder} == set(targets.tolist())
    assert _mmcs(decoder, recording.loadings, targets) >= 0.9
    qc = {r["split"]: r for r in _sql(Path(db), "SELECT split, fvu, ridge_fvu, ridge_alpha, pca_fvu FROM qc", tmp_path)}
    assert set(qc) == {"train", "val", "test"}
    for split in ("val", "test"):
        assert qc[split]["pca_fvu"] is None and qc[split]["fvu"] < qc[split]["ridge_fvu"] < 1, qc
    assert len({r["ridge_alpha"] for r in qc.values()}) == 1  # one penalty, chosen on val

    # Ranking, labels, validation and the report on the transcoder's features, unchanged.
    top = _sql(Path(db), "SELECT feature_id FROM rankings ORDER BY rank LIMIT 3", tmp_path)
    for row in top:
        labelled = run_cli("label", "--run", "1", "--feature", str(row["feature_id"]), "--accept", "1", "--db", db,
                           cwd=tmp_path)
        assert labelled.returncode == 0, labelled.stderr
    # --max-draws 20: what validation reads and stores for a transcoder is checked here, not its verdicts
    validated = run_cli("validate", "--run", "1", "--max-draws", "20", "--db", db, cwd=tmp_path, timeout=600)
    assert validated.returncode == 0, validated.stderr
    outside = _sql(Path(db), "SELECT count(*) AS n FROM signatures WHERE in_signature AND unit_id >= 60", tmp_path)
    assert outside == [{"n": 0}]
    inside = _sql(Path(db), "SELECT count(*) AS n FROM signatures WHERE in_signature", tmp_path)
    assert inside[0]["n"] > 0
    # Feature ablation reads the reconstruction of the targets; zeroing signature units "in the input" has no
    # meaning when they are targets, so that figure is left out with the reason.
    ablations = _sql(Path(db), "SELECT necessity_drop, signature_ablation_drop, ablation_note FROM validations",
                     tmp_path)
    assert ablations and all(r["signature_ablation_drop"] is None and "transcoder" in r["ablation_note"]
                             for r in ablations), ablations
    assert any(r["necessity_drop"] is not None for r in ablations), ablations
    report = run_cli("report", "--run", "1", "--db", db, "--out", str(tmp_path / "r.md"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r.md").read_text()
    assert "Transcoder: inputs 60 units (area=CA3), targets 60 units (area=CA1)" in text
    assert "| ridge_fvu |" in text and "| pca_fvu |" not in text


def test_the_ridge_baseline_chooses_its_penalty_on_val_and_only_scores_test():
    from engine.sae.qc import RIDGE_ALPHAS, ridge_baseline

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(6, 4))

    def split(n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 6))
        return x, x @ mixing + noise * rng.normal(size=(n, 4))

    train, val, test = split(400, 0.1), split(200, 0.1), split(200, 0.1)
    fitted = ridge_baseline(train, {"train": train, "val": val, "test": test})
    assert fitted.alpha in RIDGE_ALPHAS and fitted.alpha < 10  # a linear map: little penalty wins on val
    assert fitted.fvu["val"] < 0.05 and fitted.fvu["test"] < 0.05
    scrambled = (test[0], rng.permutation(test[1]))  # test changes nothing but its own score
    again = ridge_baseline(train, {"train": train, "val": val, "test": scrambled})
    assert again.alpha == fitted.alpha and again.fvu["val"] == fitted.fvu["val"] and again.fvu["test"] > 0.9
