"""An NWB file's Units table as unit attributes (`unit_attributes`): its scalar columns and, through its
`electrodes` region, each unit's electrodes' location and group_name; `--unit-meta` merged over them; and a
transcoder trained between the areas a real file names. All through the real CLI on real DuckDB files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from spike_cases import UNIT_NAMES, Session, make_session, run_mini

from store import Store
from tests.conftest import shared_file

# Per unit (in UNIT_NAMES order): its electrodes (rows of the electrodes table) and what they say.
ELECTRODES = (("CA1", "shank0"), ("CA1", "shank0"), ("CA3", "shank1"), ("CA3, stratum oriens", "shank1"),
              (" ", "shank1"))
"""location and electrode group of each row of the electrodes table; row 4 has no location (blank: pynwb refuses
an empty one)."""
UNIT_ELECTRODES = ([0], [0, 1], [1, 2], [2], [3], [4])
"""Unit 2 spans CA1 and CA3 on two shanks: its electrodes disagree."""


def write_nwb_units(path: Path, session: Session, *, electrodes: bool = True, columns: bool = True) -> Path:
    """Units with spike times; with `columns`, a text column (`quality`, one cell empty, one holding `|`), a float
    one (`snr`, one NaN), a boolean one, one whose name holds a space (`cell type`) and one that is the same key
    once its name is sanitised (`cell=type`), a ragged one and an array-valued `waveform_mean`; with `electrodes`, the region into an electrodes table of two shanks (ELECTRODES)."""
    from pynwb import NWBHDF5IO, NWBFile

    nwbfile = NWBFile(session_description="units with attributes", identifier="mini-unit-attributes",
                      session_start_time=datetime(2024, 1, 1, tzinfo=UTC))
    if electrodes:
        device = nwbfile.create_device(name="probe")
        groups = {name: nwbfile.create_electrode_group(name, description=name, location="hippocampus", device=device)
                  for name in ("shank0", "shank1")}
        for location, group in ELECTRODES:
            nwbfile.add_electrode(group=groups[group], group_name=group, location=location)
    if columns:
        for name, text, ragged in (("quality", "curation", False), ("snr", "signal to noise", False),
                                   ("is_good", "passes curation", False), ("cell type", "putative type", False),
                                   ("cell=type", "the same key once written for --inputs", False),
                                   ("depths", "several depths", True)):
            nwbfile.add_unit_column(name=name, description=text, index=ragged)
    for i, name in enumerate(UNIT_NAMES):
        row: dict = {"spike_times": session.trains[name]}
        if electrodes:
            row["electrodes"] = UNIT_ELECTRODES[i]
        if columns:
            row.update(quality="" if i == 5 else "good | noisy" if i == 4 else ("good" if i % 2 == 0 else "mua"),
                       snr=np.nan if i == 3 else 2.0 + i * 0.5, is_good=i % 2 == 0,
                       **{"cell type": "pyramidal" if i < 4 else "interneuron", "cell=type": "x"},
                       depths=[10.0 * i] * (1 + i % 2),
                       waveform_mean=np.zeros((5, 2)))
        nwbfile.add_unit(**row)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def attributes(db_path: Path, dataset: str | None = None) -> dict[str, dict[str, str]]:
    """key -> unit name -> value, as stored."""
    with Store.open(db_path, read_only=True) as db:
        rows = db.frame("SELECT a.key, u.name, a.value FROM unit_attributes a JOIN units u USING (dataset_id, unit_id) "
                        "JOIN datasets d USING (dataset_id) WHERE d.name = coalesce(?, d.name)", [dataset]).rows()
    out: dict[str, dict[str, str]] = {}
    for key, unit, value in rows:
        out.setdefault(key, {})[unit] = value
    return out


def test_unit_columns_and_electrodes_become_attributes(tmp_path: Path) -> None:
    write_nwb_units(tmp_path / "s.nwb", make_session())
    done = run_mini("import-nwb", "s.nwb", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = attributes(tmp_path / "x.duckdb")
    assert set(stored) == {"quality", "snr", "is_good", "cell_type", "location", "group_name"}
    # Scalar columns as text; the empty cell and the NaN give no value; whole floats lose their decimal point.
    assert stored["quality"] == {"unit_0": "good", "unit_1": "mua", "unit_2": "good", "unit_3": "mua",
                                 "unit_4": "good;noisy"}  # '|' is an operator of the selection syntax
    # (A column with a fraction keeps the decimal point on its whole values, as --unit-meta does.)
    assert stored["snr"] == {"unit_0": "2.0", "unit_1": "2.5", "unit_2": "3.0", "unit_4": "4.0", "unit_5": "4.5"}
    assert stored["is_good"] == {f"unit_{i}": "true" if i % 2 == 0 else "false" for i in range(6)}
    assert stored["cell_type"] == {f"unit_{i}": "pyramidal" if i < 4 else "interneuron" for i in range(6)}
    # Through the electrodes region: agreeing electrodes give one value, disagreeing ones their distinct values
    # sorted and joined with ';'; a ',' (an operator of the selection syntax) is written as ';'; an empty
    # location is no value.
    assert stored["location"] == {"unit_0": "CA1", "unit_1": "CA1", "unit_2": "CA1;CA3", "unit_3": "CA3",
                                  "unit_4": "CA3;stratum oriens"}
    assert stored["group_name"] == {"unit_0": "shank0", "unit_1": "shank0", "unit_2": "shank0;shank1",
                                    "unit_3": "shank1", "unit_4": "shank1", "unit_5": "shank1"}
    notes = done.stderr
    assert ("note: s.nwb:units: unit attributes quality, snr, is_good, cell_type from the Units table; location, "
            "group_name from the units' electrodes") in notes
    assert "attribute names written for the selection syntax: 'cell type' as cell_type" in notes
    assert "not unit attributes: 'depths' (several values per row), 'cell=type' (a second cell_type)" in notes
    assert "2 attribute value(s) held ',' or '|' (operators of --inputs and --targets), written as ';'" in notes
    assert "waveform_mean" not in notes  # a standard array column: not an attribute, not worth a note

    # Every stored value can be selected: a transcoder from the CA1 units to the CA3 unit and the mixed one.
    trained = run_mini("train", "--dataset", "s", "--inputs", "location=CA1", "--targets", "location=CA3|CA1;CA3",
                       "--epochs", "1", "--db", "x.duckdb", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        roles = db.frame("SELECT role, unit_id FROM run_units ORDER BY role, unit_id").rows()
    assert roles == [("input", 0), ("input", 1), ("target", 2), ("target", 3)]


def test_without_electrodes_or_columns_the_units_have_no_attributes(tmp_path: Path) -> None:
    write_nwb_units(tmp_path / "s.nwb", make_session(), electrodes=False, columns=False)
    done = run_mini("import-nwb", "s.nwb", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert attributes(tmp_path / "x.duckdb") == {}
    assert "unit attributes" not in done.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        assert db.scalar("SELECT n_units FROM datasets") == len(UNIT_NAMES)
    refused = run_mini("train", "--dataset", "s", "--inputs", "location=CA1", "--targets", "0", "--db", "x.duckdb",
                       cwd=tmp_path)
    assert refused.returncode == 2 and "have no attribute 'location'" in refused.stderr


def test_electrodes_alone_give_location_and_group_name(tmp_path: Path) -> None:
    write_nwb_units(tmp_path / "s.nwb", make_session(), columns=False)
    done = run_mini("import-nwb", "s.nwb", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(attributes(tmp_path / "x.duckdb")) == {"location", "group_name"}
    assert "unit attributes location, group_name from the units' electrodes" in done.stderr


def test_a_damaged_electrodes_region_is_refused_naming_the_unit_and_the_row(tmp_path: Path) -> None:
    import h5py

    from engine.errors import InputError
    from engine.ingest.nwb import read_nwb

    write_nwb_units(tmp_path / "s.nwb", make_session(), columns=False)
    with h5py.File(tmp_path / "s.nwb", "r+") as file:  # unit 3's electrode (entry 5) points past the 5 rows
        file["units/electrodes"][5] = 99
    done = run_mini("import-nwb", "s.nwb", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mini: error: s.nwb:units: column 'electrodes': unit row 3 names electrode row 99, but the electrodes "
        "table has 5 rows (0-4); the file is damaged"]
    assert not (tmp_path / "x.duckdb").exists()

    write_nwb_units(tmp_path / "t.nwb", make_session(), columns=False)
    with h5py.File(tmp_path / "t.nwb", "r+") as file:  # the last unit's end past the 8 entries
        file["units/electrodes_index"][5] = 40
    with pytest.raises(InputError, match=r"t.nwb:units: column 'electrodes': unit row 5 ends at electrode entry 40, "
                                         r"outside the 8 entries"):
        read_nwb(tmp_path / "t.nwb")


def test_unit_meta_replaces_the_files_attributes_key_by_key(tmp_path: Path) -> None:
    write_nwb_units(tmp_path / "s.nwb", make_session())
    # The table corrects `location` (unit 5 left empty: no value, though the file's would also be none) and adds
    # `layer`; the file's other keys stay.
    pl.DataFrame({"unit": [f"unit_{i}" for i in range(6)],
                  "location": ["CA2", "CA2", "CA2", "DG", "DG", None],
                  "layer": ["L1"] * 6}).write_csv(tmp_path / "units.csv")
    done = run_mini("import-nwb", "s.nwb", "--unit-meta", "units.csv", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = attributes(tmp_path / "x.duckdb")
    assert stored["location"] == {"unit_0": "CA2", "unit_1": "CA2", "unit_2": "CA2", "unit_3": "DG", "unit_4": "DG"}
    assert stored["layer"] == {f"unit_{i}": "L1" for i in range(6)}
    assert stored["group_name"]["unit_2"] == "shank0;shank1" and stored["quality"]["unit_1"] == "mua"
    assert ("note: --unit-meta units.csv: its location replace the values read from the recording (the file wins)"
            in done.stderr)


def test_units_dropped_at_import_take_their_attributes_with_them(tmp_path: Path) -> None:
    session = make_session()
    write_nwb_units(tmp_path / "s.nwb", session)
    every = np.concatenate(list(session.trains.values()))
    rates = {name: len(t) / (every.max() - every.min()) for name, t in session.trains.items()}
    slowest, second = sorted(rates.values())[:2]
    done = run_mini("import-nwb", "s.nwb", "--min-rate", str((slowest + second) / 2), "--db", "x.duckdb",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        names = db.frame("SELECT name FROM units ORDER BY unit_id")["name"].to_list()
        ids = db.frame("SELECT DISTINCT unit_id FROM unit_attributes")["unit_id"].to_list()
    assert len(names) == len(UNIT_NAMES) - 1
    assert sorted(ids) == list(range(len(names)))
    slowest = f"unit_{UNIT_NAMES.index(min(rates, key=rates.get))}"
    stored = attributes(tmp_path / "x.duckdb")
    assert all(slowest not in by_unit for by_unit in stored.values())
    assert stored["cell_type"] == {n: "pyramidal" if int(n[5:]) < 4 else "interneuron" for n in names}


PYNAPPLE_FILE = Path("shared", "data", "pynapple-nwb", "sub-4_ses-4_ecephys+image.nwb")


def test_real_file_areas_select_a_transcoders_units(tmp_path: Path) -> None:
    """pynapple's human MTL file: 35 units whose electrodes are in hippocampus_right (25) or amygdala_right (10);
    a transcoder from the amygdala units to the hippocampal ones trains end to end."""
    path = shared_file(PYNAPPLE_FILE)
    done = run_mini("import-nwb", str(path), "--trials-table", "encoding_table", "--name", "mtl", "--db", "x.duckdb",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = attributes(tmp_path / "x.duckdb")
    assert set(stored) == {"location", "group_name"}
    locations = list(stored["location"].values())
    assert len(locations) == 35
    assert (locations.count("hippocampus_right"), locations.count("amygdala_right")) == (25, 10)
    assert "unit attributes location, group_name from the units' electrodes" in done.stderr
    trained = run_mini("train", "--dataset", "mtl", "--inputs", "location=amygdala_right", "--targets",
                       "location=hippocampus_right", "--epochs", "2", "--db", "x.duckdb", cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert "inputs 10 units, targets 25 units" in trained.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        roles = dict(db.frame("SELECT role, count(*) FROM run_units GROUP BY role").rows())
        units = db.frame("SELECT r.role, a.value FROM run_units r JOIN unit_attributes a USING (unit_id) "
                         "WHERE a.key = 'location'").rows()
        qc = db.frame("SELECT split, fvu FROM qc").rows()
    assert roles == {"input": 10, "target": 25}
    assert {(role, value) for role, value in units} == {("input", "amygdala_right"), ("target", "hippocampus_right")}
    assert {split for split, _ in qc} == {"train", "val", "test"} and all(np.isfinite(f) for _, f in qc)
