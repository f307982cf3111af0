"""The SQL of the first four schema migrations (store/migrations.py lists them): the schema of the first
release, with datasets, runs, rankings and labels.

Big tables (counts, natural_values, activations) carry no primary key: they are written in bulk from
frames whose keys are unique by construction, and an index would slow those writes several-fold.

`activations`, the largest table, names its compression per column: DuckDB otherwise spends about a
third of a bulk write trying every method on every row group. The choices fit how it is written
(sorted by example, so example_id runs are long; small feature ids; float values) and give the same
file size as DuckDB's own choice (bench/ingest.py measures both).
"""

from __future__ import annotations

V1_DATASETS = """
CREATE TABLE datasets (
    dataset_id    INTEGER PRIMARY KEY,
    name          VARCHAR NOT NULL UNIQUE,
    source        VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL CHECK (kind IN ('spike_counts', 'activations')),
    bin_size_s    DOUBLE,
    n_examples    INTEGER NOT NULL,
    n_units       INTEGER NOT NULL,
    n_trials      INTEGER NOT NULL,
    trial_source  VARCHAR NOT NULL,
    split_seed    INTEGER NOT NULL,
    options       JSON NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE units (
    dataset_id      INTEGER NOT NULL,
    unit_id         INTEGER NOT NULL,
    name            VARCHAR NOT NULL,
    mean_count      DOUBLE NOT NULL,
    firing_rate_hz  DOUBLE,
    PRIMARY KEY (dataset_id, unit_id)
);
CREATE TABLE trials (
    dataset_id     INTEGER NOT NULL,
    trial_id       INTEGER NOT NULL,
    label          VARCHAR NOT NULL,
    split          VARCHAR NOT NULL CHECK (split IN ('train', 'val', 'test')),
    first_example  INTEGER NOT NULL,
    n_examples     INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, trial_id)
);
CREATE TABLE examples (
    dataset_id  INTEGER NOT NULL,
    example_id  INTEGER NOT NULL,
    trial_id    INTEGER NOT NULL,
    time_s      DOUBLE,
    split       VARCHAR NOT NULL CHECK (split IN ('train', 'val', 'test'))
);
CREATE TABLE counts (
    dataset_id  INTEGER NOT NULL,
    example_id  INTEGER NOT NULL,
    unit_id     INTEGER NOT NULL,
    value       REAL NOT NULL
);
CREATE TABLE natural_variables (
    dataset_id  INTEGER NOT NULL,
    variable    VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL CHECK (kind IN ('continuous', 'categorical', 'circular', 'binary')),
    period      DOUBLE,
    n_levels    INTEGER,
    n_missing   INTEGER NOT NULL,
    source      VARCHAR NOT NULL CHECK (source IN ('inferred', 'declared')),
    PRIMARY KEY (dataset_id, variable)
);
CREATE TABLE natural_values (
    dataset_id  INTEGER NOT NULL,
    example_id  INTEGER NOT NULL,
    variable    VARCHAR NOT NULL,
    value       DOUBLE,
    category    VARCHAR
);
CREATE TABLE ground_truth_variables (
    dataset_id  INTEGER NOT NULL,
    variable    VARCHAR NOT NULL,
    role        VARCHAR NOT NULL CHECK (role IN ('encoded', 'distractor')),
    PRIMARY KEY (dataset_id, variable)
);
CREATE TABLE ground_truth_latents (
    dataset_id  INTEGER NOT NULL,
    latent_id   INTEGER NOT NULL,
    name        VARCHAR NOT NULL,
    variable    VARCHAR NOT NULL,
    predicate   VARCHAR NOT NULL,
    category    VARCHAR,
    low         DOUBLE,
    high        DOUBLE,
    PRIMARY KEY (dataset_id, latent_id)
);
CREATE TABLE ground_truth_loadings (
    dataset_id  INTEGER NOT NULL,
    latent_id   INTEGER NOT NULL,
    unit_id     INTEGER NOT NULL,
    weight      DOUBLE NOT NULL
);
CREATE TABLE ground_truth_activity (
    dataset_id  INTEGER NOT NULL,
    example_id  INTEGER NOT NULL,
    latent_id   INTEGER NOT NULL,
    value       REAL NOT NULL
);
CREATE TABLE activations (
    sae_id      INTEGER NOT NULL USING COMPRESSION rle,
    example_id  INTEGER NOT NULL USING COMPRESSION rle,
    feature_id  INTEGER NOT NULL USING COMPRESSION bitpacking,
    value       REAL NOT NULL USING COMPRESSION alprd
);
"""

V2_RUNS = """
CREATE TABLE runs (
    run_id         INTEGER PRIMARY KEY,
    dataset_id     INTEGER NOT NULL,
    status         VARCHAR NOT NULL CHECK (status IN ('running', 'finished', 'cancelled', 'interrupted', 'failed')),
    config         JSON NOT NULL,
    device         VARCHAR NOT NULL,
    started_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at    TIMESTAMP,
    examples_seen  BIGINT NOT NULL DEFAULT 0,
    seconds        DOUBLE,
    message        VARCHAR
);
CREATE TABLE saes (
    sae_id         INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL,
    instance       INTEGER NOT NULL,
    architecture   VARCHAR NOT NULL,
    d_in           INTEGER NOT NULL,
    d_sae          INTEGER NOT NULL,
    k              INTEGER NOT NULL,
    seed           INTEGER NOT NULL,
    loss           VARCHAR NOT NULL,
    threshold      DOUBLE,
    best_epoch     INTEGER,
    val_loss       DOUBLE
);
CREATE TABLE train_log (
    sae_id         INTEGER NOT NULL,
    step           INTEGER NOT NULL,
    epoch          INTEGER NOT NULL,
    examples_seen  BIGINT NOT NULL,
    loss           DOUBLE NOT NULL,
    l0             DOUBLE NOT NULL,
    dead_fraction  DOUBLE NOT NULL,
    lr             DOUBLE NOT NULL,
    val_loss       DOUBLE
);
CREATE TABLE features (
    sae_id         INTEGER NOT NULL,
    feature_id     INTEGER NOT NULL,
    level          INTEGER NOT NULL,
    density        DOUBLE NOT NULL,
    mean_act       DOUBLE,
    max_act        DOUBLE,
    dead           BOOLEAN NOT NULL,
    encoder_bias   DOUBLE NOT NULL,
    PRIMARY KEY (sae_id, feature_id)
);
CREATE TABLE decoder (
    sae_id         INTEGER NOT NULL,
    feature_id     INTEGER NOT NULL,
    unit_id        INTEGER NOT NULL,
    weight         REAL NOT NULL
);
CREATE TABLE qc (
    sae_id               INTEGER NOT NULL,
    split                VARCHAR NOT NULL,
    n_examples           INTEGER NOT NULL,
    l0_mean              DOUBLE,
    l0_std               DOUBLE,
    dead_fraction        DOUBLE,
    fvu                  DOUBLE,
    r2                   DOUBLE,
    cosine_mean          DOUBLE,
    summed_count_r2      DOUBLE,
    example_r2_median    DOUBLE,
    pca_fvu              DOUBLE,
    nmf_fvu              DOUBLE,
    baseline_components  INTEGER,
    n_bad_units          INTEGER,
    l0_histogram         JSON,
    density_histogram    JSON,
    PRIMARY KEY (sae_id, split)
);
CREATE TABLE unit_qc (
    sae_id    INTEGER NOT NULL,
    split     VARCHAR NOT NULL,
    unit_id   INTEGER NOT NULL,
    r2        DOUBLE,
    cosine    DOUBLE,
    bad       BOOLEAN NOT NULL
);
CREATE TABLE checkpoints (
    run_id      INTEGER NOT NULL,
    kind        VARCHAR NOT NULL CHECK (kind IN ('latest', 'final')),
    epoch       INTEGER NOT NULL,
    step        INTEGER NOT NULL,
    state       BLOB NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, kind)
);
"""

V3_RANKING = """
CREATE TABLE associations (
    sae_id              INTEGER NOT NULL,
    feature_id          INTEGER NOT NULL,
    variable            VARCHAR NOT NULL,
    kind                VARCHAR NOT NULL,
    value               VARCHAR NOT NULL,
    low                 DOUBLE,
    high                DOUBLE,
    selectivity         DOUBLE,
    auroc               DOUBLE,
    contrast            DOUBLE,
    mutual_information  DOUBLE,
    statistic           DOUBLE,
    p_value             DOUBLE,
    q_value             DOUBLE,
    effect_size         DOUBLE,
    n_on                INTEGER
);
CREATE TABLE tuning_curves (
    sae_id      INTEGER NOT NULL,
    feature_id  INTEGER NOT NULL,
    variable    VARCHAR NOT NULL,
    bin         INTEGER NOT NULL,
    low         DOUBLE,
    high        DOUBLE,
    mean        DOUBLE,
    sem         DOUBLE,
    n           INTEGER
);
CREATE TABLE mis (
    sae_id      INTEGER NOT NULL,
    feature_id  INTEGER NOT NULL,
    variable    VARCHAR NOT NULL,
    mis         DOUBLE,
    mis_soft    DOUBLE,
    n_tasks     INTEGER,
    reason      VARCHAR
);
CREATE TABLE feature_matches (
    sae_id            INTEGER NOT NULL,
    feature_id        INTEGER NOT NULL,
    other_sae_id      INTEGER NOT NULL,
    other_feature_id  INTEGER NOT NULL,
    cosine            DOUBLE NOT NULL
);
CREATE TABLE rankings (
    sae_id        INTEGER NOT NULL,
    feature_id    INTEGER NOT NULL,
    rank          INTEGER NOT NULL,
    score         DOUBLE NOT NULL,
    association   DOUBLE NOT NULL,
    mis           DOUBLE,
    stability     DOUBLE,
    suggestion    VARCHAR,
    reason        VARCHAR,
    PRIMARY KEY (sae_id, feature_id)
);
CREATE TABLE suggestions (
    sae_id       INTEGER NOT NULL,
    feature_id   INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    variable     VARCHAR NOT NULL,
    predicate    VARCHAR NOT NULL,
    value        VARCHAR,
    low          DOUBLE,
    high         DOUBLE,
    score        DOUBLE,
    p_value      DOUBLE,
    q_value      DOUBLE,
    effect_size  DOUBLE,
    PRIMARY KEY (sae_id, feature_id, position)
);
"""

V4_LABELS = """
CREATE SEQUENCE label_id_seq START 1;
CREATE TABLE labels (
    label_id    INTEGER PRIMARY KEY DEFAULT nextval('label_id_seq'),
    sae_id      INTEGER NOT NULL,
    feature_id  INTEGER NOT NULL,
    verdict     VARCHAR NOT NULL CHECK (verdict IN ('accept', 'reject', 'unsure')),
    name        VARCHAR,
    predicate   VARCHAR,
    variable    VARCHAR,
    value       VARCHAR,
    low         DOUBLE,
    high        DOUBLE,
    source      VARCHAR NOT NULL CHECK (source IN ('person', 'auto')),
    note        VARCHAR,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE VIEW current_labels AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY sae_id, feature_id ORDER BY label_id DESC) AS rn FROM labels
) WHERE rn = 1;
"""
