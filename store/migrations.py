"""Versioned schema migrations: what each version adds (store/migrate.py applies them, in order, each in
its own transaction).

Table and column names are a contract with SQL users: add, never rename silently. Every table is
described in docs/schema.md. Big tables (counts, natural_values, activations) carry no primary key:
they are written in bulk from frames whose keys are unique by construction, and an index would
slow those writes several-fold.

`activations`, the largest table, names its compression per column: DuckDB otherwise spends about a
third of a bulk write trying every method on every row group. The choices fit how it is written
(sorted by example, so example_id runs are long; small feature ids; float values) and give the same
file size as DuckDB's own choice (bench/ingest.py measures both).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    """Schema version after this migration; versions start at 1 and rise by one."""
    description: str
    """What the migration adds, as shown in `schema_version`."""
    sql: str
    """Statements separated by semicolons, run in one transaction."""


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

# The columns a validation had from the first (migration 5) and kept when attempts came (migration 11).
_VALIDATION_SCORES = """\
    label_id                 INTEGER NOT NULL,
    sae_id                   INTEGER NOT NULL,
    feature_id               INTEGER NOT NULL,
    predicate                VARCHAR,
    testable                 BOOLEAN NOT NULL,
    threshold                DOUBLE,
    tp                       INTEGER,
    fp                       INTEGER,
    fn                       INTEGER,
    tn                       INTEGER,
    precision                DOUBLE,
    recall                   DOUBLE,
    specificity              DOUBLE,
    f1                       DOUBLE,
    mcc                      DOUBLE,
    mcc_ci_low               DOUBLE,
    mcc_ci_high              DOUBLE,
    balanced_accuracy        DOUBLE,
    balanced_accuracy_ci_low DOUBLE,
    balanced_accuracy_ci_high DOUBLE,"""

# ... and the decoding comparison of the label's signature units, which both keep too.
_VALIDATION_DECODING = """\
    decode_metric            VARCHAR,
    decode_signature         DOUBLE,
    decode_all               DOUBLE,
    decode_feature           DOUBLE,
    decode_random_p95        DOUBLE,
    signature_over_all       DOUBLE,
    signature_percentile     DOUBLE,
    n_signature_units        INTEGER,"""

V5_VALIDATIONS = f"""
CREATE TABLE validations (
{_VALIDATION_SCORES}
    p_value                  DOUBLE,
    q_value                  DOUBLE,
{_VALIDATION_DECODING}
    validated                BOOLEAN,
    reason                   VARCHAR,
    created_at               TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE signatures (
    label_id      INTEGER NOT NULL,
    sae_id        INTEGER NOT NULL,
    feature_id    INTEGER NOT NULL,
    unit_id       INTEGER NOT NULL,
    weight        DOUBLE NOT NULL,
    coactivation  DOUBLE,
    in_signature  BOOLEAN NOT NULL
);
"""

# Undo without deleting: an undone labelling action stays in `labels` and gets a row here, and
# current_labels skips it, so the feature shows exactly what it showed before (its earlier label with the
# same label_id, and so with its validation, or no label at all). A copy of the earlier row appended to
# `labels` would have a new label_id (losing its validation) and could not say "no label".
#
# activations_by_feature holds the same rows as `activations`, ordered by feature, so that one feature's
# activations are a read of one or two row groups (DuckDB's zone maps) instead of a scan of every
# activation of the SAE (200 ms at 1 M examples × k = 32). The review screen builds it per SAE the first
# time it needs it; activations_by_feature_builds says which copy is current (bench/app.py measures both).
V6_REVIEW = """
CREATE TABLE label_undos (
    label_id    INTEGER PRIMARY KEY,
    sae_id      INTEGER NOT NULL,
    feature_id  INTEGER NOT NULL,
    undone_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE OR REPLACE VIEW current_labels AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY sae_id, feature_id ORDER BY label_id DESC) AS rn FROM labels
    WHERE label_id NOT IN (SELECT label_id FROM label_undos)
) WHERE rn = 1;
CREATE TABLE activations_by_feature (
    sae_id      INTEGER NOT NULL USING COMPRESSION rle,
    feature_id  INTEGER NOT NULL USING COMPRESSION rle,
    example_id  INTEGER NOT NULL USING COMPRESSION bitpacking,
    value       REAL NOT NULL USING COMPRESSION alprd
);
CREATE TABLE activations_by_feature_builds (
    sae_id           INTEGER PRIMARY KEY,
    n_rows           BIGINT NOT NULL,
    run_finished_at  TIMESTAMP,
    built_at         TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""

# Quality flags: one row per finding about a dataset (run_id NULL) or one SAE of a run, with the figure,
# the threshold it crossed and what to try next (engine/quality_flags.py). train_log splits the loss into
# its reconstruction part and the AuxK/L1 part, which switches on only once latents count as dead and
# otherwise reads as a late jump in the total.
V7_QUALITY = """
CREATE TABLE quality_flags (
    dataset_id  INTEGER NOT NULL,
    run_id      INTEGER,
    sae_id      INTEGER,
    split       VARCHAR,
    unit_id     INTEGER,
    flag        VARCHAR NOT NULL,
    value       DOUBLE,
    threshold   DOUBLE,
    message     VARCHAR NOT NULL,
    suggestion  VARCHAR NOT NULL
);
ALTER TABLE train_log ADD COLUMN reconstruction_loss DOUBLE;
ALTER TABLE train_log ADD COLUMN auxiliary_loss DOUBLE;
"""

# The bins a step read when it did not read them all (`--where`, `--around`): one row per run and step,
# replaced with the step's results in one transaction. No row: every bin of the splits the step reads.
V8_EPOCHS = """
CREATE TABLE analysis_epochs (
    run_id      INTEGER NOT NULL,
    step        VARCHAR NOT NULL CHECK (step IN ('train', 'rank', 'validate')),
    where_sql   VARCHAR,
    around      VARCHAR,
    n_train     INTEGER NOT NULL,
    n_val       INTEGER NOT NULL,
    n_test      INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, step)
);
"""

# What a dataset's values are, beyond its kind: 'counts' (whole spike counts), 'rates' (non-negative but
# not all whole, e.g. smoothed counts: no Poisson likelihood) or 'activations'. Datasets stored before
# are classified from their counts, so a smoothed import of an earlier version is marked 'rates' too.
V9_VALUE_TYPE = """
ALTER TABLE datasets ADD COLUMN value_type VARCHAR DEFAULT 'counts';
UPDATE datasets SET value_type = CASE
    WHEN kind = 'activations' THEN 'activations'
    WHEN EXISTS (SELECT 1 FROM counts c WHERE c.dataset_id = datasets.dataset_id AND c.value <> round(c.value))
        THEN 'rates'
    ELSE 'counts' END
"""

# How many shuffles each association's p-value used: 200 for most, more where a p-value sat at its floor
# (engine.analysis.associations). Rankings store the selectivity index of their first suggestion in `association`.
V10_SHUFFLES = """
ALTER TABLE associations ADD COLUMN n_shuffles INTEGER
"""

# Validation attempts, append-only (issue 15): every test of a label on the test split is kept, so a failed
# attempt stays in the multiple-testing family after the feature is relabelled. Two verdicts instead of one
# (generalises; signature_specific), the test trials behind the intervals, the null draws behind p, the
# stronger label a weaker one repeats, and the epoch the attempt was scored on. Rows written before are
# attempt 1 … n of their feature in label order, with verdicts from their stored figures and 200 shifts.
V11_ATTEMPTS = f"""
CREATE SEQUENCE validation_ids START 1;
CREATE TABLE validations_attempts (
    validation_id            BIGINT PRIMARY KEY DEFAULT nextval('validation_ids'),
    attempt                  INTEGER NOT NULL,
{_VALIDATION_SCORES}
    n_test_trials            INTEGER,
    p_value                  DOUBLE,
    n_shifts                 INTEGER,
    q_value                  DOUBLE,
{_VALIDATION_DECODING}
    generalises              BOOLEAN,
    signature_specific       BOOLEAN,
    validated                BOOLEAN,
    duplicate_of             INTEGER,
    reason                   VARCHAR,
    where_sql                VARCHAR,
    around                   VARCHAR,
    created_at               TIMESTAMP NOT NULL DEFAULT current_timestamp
);
INSERT INTO validations_attempts BY NAME
SELECT v.* EXCLUDE (validated, created_at), v.created_at,
       row_number() OVER (PARTITION BY v.sae_id, v.feature_id ORDER BY v.label_id) AS attempt,
       CASE WHEN v.testable THEN coalesce(v.mcc_ci_low > 0 AND v.q_value < 0.05, false) END AS generalises,
       CASE WHEN v.testable THEN coalesce(v.decode_signature > v.decode_random_p95, false) END AS signature_specific,
       v.validated,
       CASE WHEN v.p_value IS NOT NULL THEN 200 END AS n_shifts,
       e.where_sql, e.around
FROM validations v JOIN saes s USING (sae_id)
LEFT JOIN analysis_epochs e ON e.run_id = s.run_id AND e.step = 'validate'
ORDER BY v.created_at, v.label_id;
DROP TABLE validations;
ALTER TABLE validations_attempts RENAME TO validations;
CREATE VIEW current_validations AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY label_id ORDER BY validation_id DESC) AS rn FROM validations
) WHERE rn = 1;
"""

# Preregistration (issue 15): a run's labels can be frozen before any test result is read, and a run can be
# made blind first, so validation refuses to read the test split until they are. One row per run that was
# ever blinded or frozen; n_attempts_seen is how many validation attempts of the run were stored before the
# freeze (0: frozen before any test result was seen).
V12_FREEZES = """
CREATE TABLE label_freezes (
    run_id           INTEGER PRIMARY KEY,
    blind_since      TIMESTAMP,
    frozen_at        TIMESTAMP,
    n_attempts_seen  INTEGER NOT NULL DEFAULT 0
)
"""

# Sweeps (issue 19): a grid of SAE settings trained by worker processes or cluster jobs that never open the
# database. Each trial's results are files in the sweep folder; the process that owns the database ingests
# them here, idempotently (one row per trial, replaced as its files change). Metrics are train and val only:
# the model is chosen without the test split. A promoted trial becomes an ordinary run (run_id).
V13_SWEEPS = """
CREATE TABLE sweeps (
    sweep_id      INTEGER PRIMARY KEY,
    dataset_id    INTEGER NOT NULL,
    grid          VARCHAR NOT NULL,
    options       JSON NOT NULL,
    executor      VARCHAR NOT NULL CHECK (executor IN ('local', 'slurm', 'ray')),
    folder        VARCHAR NOT NULL,
    n_trials      INTEGER NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    ingested_at   TIMESTAMP
);
CREATE TABLE sweep_trials (
    sweep_id       INTEGER NOT NULL,
    trial_id       INTEGER NOT NULL,
    pack_id        VARCHAR NOT NULL,
    config         JSON NOT NULL,
    config_hash    VARCHAR NOT NULL,
    architecture   VARCHAR NOT NULL,
    d_sae          INTEGER NOT NULL,
    k              INTEGER NOT NULL,
    loss           VARCHAR NOT NULL,
    seed           BIGINT NOT NULL,
    status         VARCHAR NOT NULL CHECK (status IN ('pending', 'running', 'finished', 'failed', 'lost')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    job_id         VARCHAR,
    host           VARCHAR,
    device         VARCHAR,
    started_at     TIMESTAMP,
    finished_at    TIMESTAMP,
    seconds        DOUBLE,
    examples_seen  BIGINT,
    best_epoch     INTEGER,
    train_fvu      DOUBLE,
    val_fvu        DOUBLE,
    val_l0         DOUBLE,
    val_dead_fraction DOUBLE,
    stability      DOUBLE,
    error          VARCHAR,
    run_id         INTEGER,
    PRIMARY KEY (sweep_id, trial_id)
)
"""

# Causal ablation (issue 20): each validation attempt also says whether its feature is *necessary* for reading
# the predicate from the SAE's reconstruction on test (engine.validation.ablation), a third figure beside the two
# verdicts. Older attempts keep NULL (never computed). The view is rebuilt so that it lists the new columns.
V14_ABLATION = """
DROP VIEW current_validations;
ALTER TABLE validations ADD COLUMN reconstruction_decode DOUBLE;
ALTER TABLE validations ADD COLUMN necessity_drop DOUBLE;
ALTER TABLE validations ADD COLUMN necessity_null_p95 DOUBLE;
ALTER TABLE validations ADD COLUMN necessity_p DOUBLE;
ALTER TABLE validations ADD COLUMN n_ablation_null INTEGER;
ALTER TABLE validations ADD COLUMN necessary BOOLEAN;
ALTER TABLE validations ADD COLUMN signature_ablation_drop DOUBLE;
ALTER TABLE validations ADD COLUMN signature_ablation_null_p95 DOUBLE;
ALTER TABLE validations ADD COLUMN signature_ablation_p DOUBLE;
ALTER TABLE validations ADD COLUMN n_signature_ablation_null INTEGER;
ALTER TABLE validations ADD COLUMN signature_necessary BOOLEAN;
ALTER TABLE validations ADD COLUMN ablation_note VARCHAR;
CREATE VIEW current_validations AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY label_id ORDER BY validation_id DESC) AS rn FROM validations
) WHERE rn = 1;
"""

# Transcoders (issue 20): attributes of a dataset's units given at import (`--unit-meta`, NWB unit columns), the
# units a transcoder run reads (inputs) and reconstructs (targets), and the ridge regression baseline from inputs to
# targets beside each QC row (null for a plain SAE, whose baselines are PCA and NMF).
V15_TRANSCODERS = """
CREATE TABLE unit_attributes (
    dataset_id  INTEGER NOT NULL,
    unit_id     INTEGER NOT NULL,
    key         VARCHAR NOT NULL,
    value       VARCHAR NOT NULL,
    PRIMARY KEY (dataset_id, unit_id, key)
);
CREATE TABLE run_units (
    run_id   INTEGER NOT NULL,
    role     VARCHAR NOT NULL CHECK (role IN ('input', 'target')),
    unit_id  INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (run_id, role, unit_id)
);
ALTER TABLE qc ADD COLUMN ridge_fvu DOUBLE;
ALTER TABLE qc ADD COLUMN ridge_alpha DOUBLE;
"""

# Temporal context (issue 20, `mini train --history L`): each feature's encoder weight norm per lag (lag 0 is the
# bin itself, lag j the bin j earlier in its trial) and the input unit that weighs most at that lag.
V16_ENCODER_LAGS = """
CREATE TABLE encoder_lags (
    sae_id       INTEGER NOT NULL,
    feature_id   INTEGER NOT NULL,
    lag          INTEGER NOT NULL,
    norm         DOUBLE NOT NULL,
    top_unit_id  INTEGER NOT NULL,
    PRIMARY KEY (sae_id, feature_id, lag)
)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "datasets, units, trials, examples, counts, natural variables, ground truth, activations",
              V1_DATASETS),
    Migration(2, "runs, saes, train_log, features, decoder, qc, unit_qc, checkpoints", V2_RUNS),
    Migration(3, "associations, tuning_curves, mis, feature_matches, rankings, suggestions", V3_RANKING),
    Migration(4, "labels (append-only) and the current_labels view", V4_LABELS),
    Migration(5, "validations and signatures", V5_VALIDATIONS),
    Migration(6, "label_undos (undo keeps labels append-only), activations_by_feature for fast review",
              V6_REVIEW),
    Migration(7, "quality_flags; train_log's reconstruction and auxiliary losses", V7_QUALITY),
    Migration(8, "analysis_epochs: the bins (--where, --around) each run, ranking and validation used", V8_EPOCHS),
    Migration(9, "datasets.value_type: counts, rates (not whole numbers) or activations", V9_VALUE_TYPE),
    Migration(10, "associations.n_shuffles: shuffles behind each p-value (more where needed)", V10_SHUFFLES),
    Migration(11, "validations kept per attempt (append-only) with two verdicts; current_validations view",
              V11_ATTEMPTS),
    Migration(12, "label_freezes: blind runs and frozen labels (preregistration)", V12_FREEZES),
    Migration(13, "sweeps and sweep_trials: grids of SAE settings trained outside the database", V13_SWEEPS),
    Migration(14, "validations: necessity by causal ablation (feature and signature units) beside the verdicts",
              V14_ABLATION),
    Migration(15, "transcoders: unit_attributes, run_units, qc.ridge_fvu and ridge_alpha", V15_TRANSCODERS),
    Migration(16, "encoder_lags: per-lag encoder weight norms of runs with temporal context", V16_ENCODER_LAGS),
)
