"""A toy model for mini's model-interpretability use: what do a tiny MLP's hidden units encode?

The task is physical: is a precipitation report snow, mixed or rain, given the 2 m air temperature,
the relative humidity and a radar-reflectivity-like intensity? The truth follows the wet-bulb
temperature (Stull 2011), which sets how much a falling snowflake melts, with the snow/rain
transition moving to warmer wet-bulb temperatures as precipitation gets heavier (melting cools the
air). The MLP never sees the wet-bulb temperature; whether a hidden feature tracks it is the kind of
question mini answers.

Run from the project root:
    .venv/bin/python examples/precipitation_mlp.py --out precip            # about a minute on 2 CPU cores
It trains the MLP, saves it (precip/precipitation_mlp.pt) and its inputs (precip/precipitation.parquet),
captures the first hidden layer's activations, imports them into precip/precip.duckdb as dataset
`precipitation` (kind `activations`, natural features: the inputs, the wet-bulb temperature and the
phase), trains two BatchTopK SAEs on them, ranks their features and prints the top ones.
The import step is the same as `mini import-activations precip/precipitation_mlp.pt
precip/precipitation.parquet --inputs temperature,humidity,reflectivity --layer 2`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from engine.analysis.rank import rank_run  # noqa: E402
from engine.ingest.capture import capture_activations, prepare_activation_dataset  # noqa: E402
from engine.ingest.importer import ImportOptions, store_dataset  # noqa: E402
from engine.pipeline import RunSpec, train_run  # noqa: E402
from engine.sae.config import SAEConfig  # noqa: E402
from engine.sae.train import TrainConfig  # noqa: E402
from store import Store  # noqa: E402
from store.quality import run_flags  # noqa: E402
from store.rankings import top_features  # noqa: E402
from store.runs import load_saes  # noqa: E402

INPUTS = ("temperature", "humidity", "reflectivity")
PHASES = ("snow", "mixed", "rain")
HIDDEN_LAYER = "2"
"""The first hidden layer's ReLU in the Sequential below (0 scaling, 1 Linear, 2 ReLU, …)."""


def wet_bulb(temperature: np.ndarray, humidity: np.ndarray) -> np.ndarray:
    """Wet-bulb temperature (°C) from air temperature (°C) and relative humidity (%), Stull (2011)."""
    t, rh = temperature, humidity
    return (t * np.arctan(0.151977 * np.sqrt(rh + 8.313659)) + np.arctan(t + rh) - np.arctan(rh - 1.676331)
            + 0.00391838 * rh ** 1.5 * np.arctan(0.023101 * rh) - 4.686035)


def make_reports(n: int, seed: int) -> pl.DataFrame:
    """n precipitation reports: the three inputs, the wet-bulb temperature and the observed phase."""
    rng = np.random.default_rng(seed)
    temperature = rng.uniform(-6.0, 8.0, n)
    humidity = rng.uniform(50.0, 100.0, n)
    reflectivity = rng.uniform(5.0, 50.0, n)
    tw = wet_bulb(temperature, humidity)
    # Centre of the snow → rain transition: ~0.6 °C wet-bulb, warmer in heavier precipitation.
    margin = tw - (0.6 + 0.02 * (reflectivity - 25.0)) + rng.normal(0.0, 0.15, n)
    phase = np.where(margin < -0.6, 0, np.where(margin > 0.6, 2, 1))
    flip = rng.random(n) < 0.02  # observers disagree now and then
    phase[flip] = rng.integers(0, 3, int(flip.sum()))
    return pl.DataFrame({"temperature": temperature, "humidity": humidity, "reflectivity": reflectivity,
                         "wet_bulb": tw, "phase": np.array(PHASES)[phase]})


def build_mlp(reports: pl.DataFrame, hidden: int = 32) -> nn.Sequential:
    """Standardise (a fixed Linear, so the saved model takes raw inputs) → 2 hidden ReLU layers → 3 logits."""
    x = reports.select(INPUTS).to_numpy()
    scale = nn.Linear(3, 3)
    with torch.no_grad():
        scale.weight.copy_(torch.diag(torch.tensor(1.0 / x.std(axis=0), dtype=torch.float32)))
        scale.bias.copy_(torch.tensor(-x.mean(axis=0) / x.std(axis=0), dtype=torch.float32))
    scale.requires_grad_(False)
    return nn.Sequential(scale, nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
                         nn.Linear(hidden // 2, 3))


def train_mlp(model: nn.Sequential, reports: pl.DataFrame, epochs: int, seed: int) -> float:
    """Adam on cross-entropy; returns accuracy on held-out reports (the last fifth)."""
    torch.manual_seed(seed)
    x = torch.tensor(reports.select(INPUTS).to_numpy(), dtype=torch.float32)
    y = torch.tensor(reports["phase"].replace_strict({p: i for i, p in enumerate(PHASES)}).to_numpy())
    n_fit = len(x) * 4 // 5
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(n_fit).split(128):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    with torch.no_grad():
        return float((model(x[n_fit:]).argmax(1) == y[n_fit:]).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("precip"), help="folder for the model, data and database")
    parser.add_argument("--samples", type=int, default=10_000, help="precipitation reports (default 10000)")
    parser.add_argument("--epochs", type=int, default=20, help="MLP training epochs (default 20)")
    parser.add_argument("--sae-epochs", type=int, help="SAE training epochs (default: early stopping on val, as "
                                                       "`mini train` does)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    reports = make_reports(args.samples, args.seed)
    torch.manual_seed(args.seed)  # the layers' initial weights too, so one seed gives one model
    model = build_mlp(reports)
    accuracy = train_mlp(model, reports, args.epochs, args.seed)
    print(f"MLP: held-out accuracy {accuracy:.3f} on {args.samples // 5:,} reports")
    model_path, data_path = args.out / "precipitation_mlp.pt", args.out / "precipitation.parquet"
    torch.save(model, model_path)
    reports.write_parquet(data_path)
    print(f"saved {model_path} and {data_path}")

    hidden = capture_activations(model, HIDDEN_LAYER, reports.select(INPUTS).to_numpy())
    new, notes = prepare_activation_dataset(hidden, reports, ImportOptions(name="precipitation"),
                                            layer=HIDDEN_LAYER, source=f"{model_path} + {data_path}")
    new.options["model"] = {"held_out_accuracy": accuracy, "held_out_reports": args.samples // 5}
    db_path = args.out / "precip.duckdb"
    with Store.open(db_path) as db:
        imported = store_dataset(db, new, notes)
        print(f"imported '{imported.name}': {imported.n_examples:,} inputs × {imported.n_units} hidden units")
        # Width, k, batch size and (unless given) epochs are chosen from the recording, as `mini train` does.
        chosen = ("d_sae", "k", "batch_size") + (("epochs",) if args.sae_epochs is None else ())
        spec = RunSpec(dataset="precipitation", sae=SAEConfig(architecture="batchtopk"), instances=2, seed=args.seed,
                       train=TrainConfig(epochs=args.sae_epochs or 1, seed=args.seed, device="cpu"), auto=chosen)
        run = train_run(db, spec, report=print)
        print(f"trained run {run.run_id} ({run.status}) in {run.seconds:.0f} s")
        for flag in run_flags(db, run.run_id):
            print(f"flag: SAE {flag['sae_id']}: {flag['message']} — try: {flag['suggestion']}")
        ranked = rank_run(db, run.run_id)
        print(f"ranked its features in {ranked.seconds:.0f} s")
        sae_id = int(load_saes(db, run.run_id)["sae_id"][0])
        with pl.Config(tbl_rows=15, tbl_width_chars=120, fmt_str_lengths=60):
            print(top_features(db, sae_id, 15))
    print(f"explore it with: mini --db {db_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
