"""Versioned schema migrations: what each version adds (store/migrate.py applies them, in order, each in
its own transaction).

Table and column names are a contract with SQL users: add, never rename silently. Every table is
described in docs/schema.md. The SQL of the first four migrations, the schema of the first release, is in
store/migration_sql.py; the later ones are below, each with why it was added.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.migration_sql import V1_DATASETS, V2_RUNS, V3_RANKING, V4_LABELS


@dataclass(frozen=True)
class Migration:
    version: int
    """Schema version after this migration; versions start at 1 and rise by one."""
    description: str
    """What the migration adds, as shown in `schema_version`."""
    sql: str
    """Statements separated by semicolons, run in one transaction."""


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
