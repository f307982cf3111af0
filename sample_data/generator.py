"""A synthetic behavioural session with planted neural ground truth: the demo's recording.

The task: each trial the animal is cued with one of eight conditions, runs the length of a 1 m
track, and is rewarded at the end on most trials; an inter-trial interval (ITI) follows off the
track, with no condition in force. Planted latents, each tied to one natural-feature value, drive
sparse, overlapping ensembles of units (a unit may belong to up to three ensembles:
superposition); the remaining units fire at baseline. A driven ensemble fires in bursts: in each
bin with a probability set by behaviour, at a strength that varies. Counts are Poisson. Two
distractor variables are recorded that no unit encodes, so a pipeline that "discovers" them is
fooling itself.

Everything is drawn from one seeded generator, so a seed names a recording exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

PHASES = ("cue", "run", "outcome", "iti")


@dataclass(frozen=True)
class SampleConfig:
    """Settings of the synthetic session; defaults give about 60,000 bins × 120 units."""

    seed: int = 0
    """Seed of the one random generator everything is drawn from."""
    n_bins: int = 60_000
    """Number of time bins (examples); the last trial is cut where the session ends."""
    n_units: int = 120
    """Number of recorded units, ensemble members and noise units together."""
    bin_size_s: float = 0.05
    """Width of a time bin in seconds."""
    n_conditions: int = 8
    """Number of cued conditions (a categorical natural feature)."""
    place_field_centres_m: tuple[float, ...] = (0.15, 0.38, 0.62, 0.85)
    """Centres of the planted place fields along the 1 m track."""
    place_field_sigma_m: float = 0.05
    """Gaussian width of each place field; ground truth spans centre ± 2 sigma."""
    speed_threshold_cm_s: float = 25.0
    """Speed above which the speed ensemble starts to fire (it rises linearly above it)."""
    reward_probability: float = 0.8
    """Share of trials that end with a reward."""
    membership_probabilities: tuple[float, float, float, float] = (0.2, 0.45, 0.25, 0.10)
    """Probability that a unit belongs to 0, 1, 2 or 3 planted ensembles."""
    baseline_rate_hz: float = 3.0
    """Median baseline firing rate (log-normal across units)."""
    ensemble_gain_hz: float = 25.0
    """Median extra rate an active ensemble adds to a member unit (log-normal across members)."""
    event_probability: float = 0.7
    """Probability that a fully driven ensemble fires in a bin. Ensembles fire in bursts, not
    continuously; that variability is also what lets any method tell co-occurring ensembles apart."""
    event_gain_sigma: float = 0.3
    """Log-normal spread of an ensemble's strength from one firing bin to the next."""


@dataclass
class SampleRecording:
    """A generated session: counts, per-bin metadata and the planted ground truth."""

    config: SampleConfig
    counts: np.ndarray
    """int32 [n_bins × n_units] spike counts."""
    unit_names: list[str]
    metadata: pl.DataFrame
    """One row per bin: trial, time_s and the natural features."""
    latents: pl.DataFrame
    """latent_id, name, variable, predicate, category, low, high: what each planted latent encodes."""
    loadings: pl.DataFrame
    """latent_id, unit_id, weight (Hz added at full activation)."""
    activity: pl.DataFrame
    """example_id, latent_id, value: the strength of each ensemble burst (bins where it fired)."""
    variable_roles: pl.DataFrame = field(repr=False)
    """variable, role: 'encoded' or 'distractor'."""

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write counts.npz and metadata.parquet (what `mini import` reads) and the ground truth."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        counts_path, meta_path = folder / "counts.npz", folder / "metadata.parquet"
        np.savez(counts_path, counts=self.counts, unit_names=np.array(self.unit_names))
        self.metadata.write_parquet(meta_path)
        self.latents.write_parquet(folder / "ground_truth_latents.parquet")
        self.loadings.write_parquet(folder / "ground_truth_loadings.parquet")
        return counts_path, meta_path


def _trial_structure(config: SampleConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-bin behaviour of the whole session, trial by trial, until n_bins are filled."""
    bin_s = config.bin_size_s
    columns: dict[str, list[np.ndarray]] = {k: [] for k in
                                            ("trial", "condition", "phase", "position", "speed", "reward",
                                             "house_light")}
    total, trial = 0, 0
    while total < config.n_bins:
        condition = rng.integers(config.n_conditions)
        rewarded = rng.random() < config.reward_probability
        light = int(rng.random() < 0.5)
        # Run: a half-sine speed profile whose integral is the 100 cm track.
        peak_speed = rng.uniform(30.0, 70.0)
        run_bins = max(4, round(100.0 * np.pi / (2.0 * peak_speed) / bin_s))
        t = (np.arange(run_bins) + 0.5) / run_bins
        run_speed = peak_speed * np.sin(np.pi * t) * rng.normal(1.0, 0.05, run_bins).clip(0.8, 1.2)
        run_position = np.cumsum(run_speed) * bin_s / 100.0
        run_position = run_position / run_position[-1]  # ends exactly at the track's end
        cue_bins, outcome_bins, iti_bins = 10, 12, int(rng.integers(15, 41))
        lengths = {"cue": cue_bins, "run": run_bins, "outcome": outcome_bins, "iti": iti_bins}
        n = sum(lengths.values())
        columns["trial"].append(np.full(n, trial))
        columns["condition"].append(np.full(n, condition))
        columns["phase"].append(np.repeat(np.arange(4), list(lengths.values())))
        columns["position"].append(np.concatenate([np.zeros(cue_bins), run_position, np.ones(outcome_bins),
                                                   np.full(iti_bins, np.nan)]))
        columns["speed"].append(np.concatenate([np.abs(rng.normal(0, 0.5, cue_bins)), run_speed,
                                                np.abs(rng.normal(0, 0.5, outcome_bins)),
                                                np.full(iti_bins, np.nan)]))
        reward = np.zeros(n, dtype=np.int8)
        if rewarded:
            reward[cue_bins + run_bins: cue_bins + run_bins + 6] = 1
        columns["reward"].append(reward)
        columns["house_light"].append(np.full(n, light, dtype=np.int8))
        total += n
        trial += 1
    return {k: np.concatenate(v)[: config.n_bins] for k, v in columns.items()}


def _ornstein_uhlenbeck(n: int, dt: float, tau_s: float, rng: np.random.Generator) -> np.ndarray:
    """A slow, autocorrelated signal: the kind of distractor that fools tests without a proper null."""
    a = np.exp(-dt / tau_s)
    noise = rng.normal(0.0, np.sqrt(1 - a * a), n)
    out = np.empty(n)
    out[0] = rng.normal()
    for i in range(1, n):
        out[i] = a * out[i - 1] + noise[i]
    return out


def _latents(config: SampleConfig, b: dict[str, np.ndarray]) -> tuple[list[dict], np.ndarray]:
    """The planted latents: their descriptions and how strongly behaviour drives each one per bin,
    from 0 to 1 [n_bins × n_latents]."""
    specs: list[dict] = []
    columns: list[np.ndarray] = []

    def add(name: str, variable: str, predicate: str, intensity: np.ndarray, *, category=None,
            low=None, high=None) -> None:
        specs.append(dict(latent_id=len(specs), name=name, variable=variable, predicate=predicate,
                          category=category, low=low, high=high))
        columns.append(intensity.astype(np.float32))

    in_trial = b["phase"] != PHASES.index("iti")
    for c in range(config.n_conditions):
        # Condition ensembles fire while the cued condition is in force (cue to outcome), not in the
        # ITI: were they on in every bin, their average would hide in the SAE's bias and no decoder
        # direction could match a single ensemble.
        add(f"condition {c}", "condition", f"condition = {c}", ((b["condition"] == c) & in_trial) * 1.0,
            category=str(c))
    add("cue", "phase", "phase = cue", (b["phase"] == PHASES.index("cue")) * 1.0, category="cue")
    add("reward", "reward", "reward = 1", b["reward"] * 1.0, category="1")
    running = b["phase"] == PHASES.index("run")
    sigma = config.place_field_sigma_m
    for centre in config.place_field_centres_m:
        bump = np.exp(-0.5 * ((np.nan_to_num(b["position"]) - centre) / sigma) ** 2) * running
        bump[bump < 0.1] = 0.0  # a field has an edge (about ±2.1 sigma), so its activity is sparse
        low, high = round(centre - 2 * sigma, 2), round(centre + 2 * sigma, 2)
        add(f"place field {centre:.2f} m", "position", f"position in [{low:.2f}, {high:.2f})",
            bump, low=low, high=high)
    threshold = config.speed_threshold_cm_s
    speed_drive = np.clip((np.nan_to_num(b["speed"]) - threshold) / 30.0, 0.0, 1.0)
    add("fast running", "speed", f"speed in [{threshold:g}, inf)", speed_drive, low=threshold)
    return specs, np.stack(columns, axis=1)


def _ensembles(config: SampleConfig, n_latents: int, rng: np.random.Generator) -> np.ndarray:
    """Loadings [n_latents × n_units] in Hz: sparse, overlapping, balanced ensemble sizes."""
    weights = np.zeros((n_latents, config.n_units))
    memberships = rng.choice(4, size=config.n_units, p=config.membership_probabilities)
    sizes = np.zeros(n_latents)
    for unit in rng.permutation(config.n_units):
        # The smallest ensembles take the next members (random tie-breaks), so every latent is seen.
        order = np.lexsort((rng.random(n_latents), sizes))
        for latent in order[: memberships[unit]]:
            weights[latent, unit] = config.ensemble_gain_hz * rng.lognormal(0.0, 0.3)
            sizes[latent] += 1
    return weights


def generate(config: SampleConfig | None = None) -> SampleRecording:
    """Generate the session described by `config` (deterministic in config.seed)."""
    config = config or SampleConfig()
    rng = np.random.default_rng(config.seed)
    behaviour = _trial_structure(config, rng)
    distractor = _ornstein_uhlenbeck(config.n_bins, config.bin_size_s, 20.0, rng)
    specs, drive = _latents(config, behaviour)
    # Each bin, a driven ensemble fires with probability event_probability × drive, at a strength
    # that varies from burst to burst.
    fires = rng.random(drive.shape) < config.event_probability * drive
    intensity = (fires * rng.lognormal(0.0, config.event_gain_sigma, drive.shape)).astype(np.float32)
    loadings = _ensembles(config, len(specs), rng)
    baseline = config.baseline_rate_hz * rng.lognormal(0.0, 0.5, config.n_units)
    rate_hz = baseline[None, :] + intensity @ loadings
    counts = rng.poisson(rate_hz * config.bin_size_s).astype(np.int32)

    metadata = pl.DataFrame({
        "trial": behaviour["trial"].astype(np.int32),
        "time_s": np.arange(config.n_bins) * config.bin_size_s,
        "condition": behaviour["condition"].astype(np.int32),
        "phase": np.array(PHASES)[behaviour["phase"]],
        "position": behaviour["position"],
        "speed": behaviour["speed"],
        "reward": behaviour["reward"],
        "distractor": distractor,
        "house_light": behaviour["house_light"],
    }).with_columns(
        pl.col("position", "speed").fill_nan(None),
        # The condition is in force from the cue to the outcome; the ITI has none.
        pl.when(pl.col("phase") == "iti").then(None).otherwise(pl.col("condition")).alias("condition"),
    )

    latent_ids, unit_ids = np.nonzero(loadings)
    example_ids, active_latents = np.nonzero(intensity)
    return SampleRecording(
        config=config,
        counts=counts,
        unit_names=[f"unit_{i:03d}" for i in range(config.n_units)],
        metadata=metadata,
        latents=pl.DataFrame(specs, schema={"latent_id": pl.Int32, "name": pl.String, "variable": pl.String,
                                            "predicate": pl.String, "category": pl.String,
                                            "low": pl.Float64, "high": pl.Float64}),
        loadings=pl.DataFrame({"latent_id": latent_ids.astype(np.int32), "unit_id": unit_ids.astype(np.int32),
                               "weight": loadings[latent_ids, unit_ids]}),
        activity=pl.DataFrame({"example_id": example_ids.astype(np.int32),
                               "latent_id": active_latents.astype(np.int32),
                               "value": intensity[example_ids, active_latents]}),
        variable_roles=pl.DataFrame({
            "variable": ["condition", "phase", "reward", "position", "speed", "distractor", "house_light"],
            "role": ["encoded"] * 5 + ["distractor"] * 2,
        }),
    )
