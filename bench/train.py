"""Training benchmark: mini's SAE engine against SAELens and EleutherAI sparsify, same data, one process.

    bench/setup_peers.sh                      # once: .venv-bench with the peers installed
    .venv-bench/bin/python bench/train.py     # full: 30 epochs, then a sweep of 8 SAEs
    .venv-bench/bin/python bench/train.py --epochs 2 --sweep 2   # quick look
    python3 bench/train.py --device cuda --d-in 1024 --examples 16384 --d-sae 16384   # a GPU's shape (bench/gpu.sh)

Data: the sample recording (60,000 bins × 120 units of Poisson counts, planted ensembles), split
by trials as `mini import` does; every trainer sees the same train split, in batches of 1024, for
the same number of examples, with Adam at the same peak learning rate.

- mini: BatchTopK (engine.sae.model.SAEStack + engine.sae.train.Trainer), default settings; and again with
  `output="linear"` (no clamp at 0 while training), which trades structure recovery for FVU.
- SAELens: its BatchTopKTrainingSAE trained by its own SAETrainer.
- sparsify: its SparseCoder (per-example TopK: it has no BatchTopK) with its own AuxK loss, decoder
  normalisation and gradient projection, driven by a minimal loop (its Trainer needs a language model).

--d-in D generates a sample recording of D units instead (same generator, enough bins for --examples training
rows); --d-sae, --batch and --precision change the SAE's width, the batch and mini's arithmetic (auto: bf16 autocast
on CUDA, float32 elsewhere). On CUDA the peers run under the same bf16 autocast whenever mini does.

Quality on the validation split after training: FVU, dead fraction (latents that fire on no train
example) and MMCS (mean over planted ensembles of the best cosine with a decoder row). Speed:
training examples per second, and the encoder's FLOP/s against this machine's measured matmul
peak, float32 on CPU and bf16 on a GPU (2·d_in·d_sae FLOP per example is the floor of any SAE step). The sweep trains 8 SAEs
(seeds 0–7) together in one stack; the peers would train them one after another, so their sweep
time is 8 × their measured single-SAE time.

Rounds (--repeat, 3 by default): every trainer runs once per round, in the same order, and each one's median time
over the rounds counts; the runs are listed beside it, and each speedup within each round (`…_by_round`). The machines are shared, and one run of a peer has swung by
30 % from one minute to the next: a median of interleaved runs is steadier than any single pair.

Prints progress to stderr and, last on stdout, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

from engine.ingest.splits import assign_splits  # noqa: E402
from engine.sae.model import SAEConfig, SAEStack  # noqa: E402
from engine.sae.train import TrainConfig, TrainData, Trainer, pick_device  # noqa: E402
from sample_data import generate  # noqa: E402
from sample_data.generator import SampleConfig  # noqa: E402

D_SAE, K, BATCH = 512, 8, 1024
"""Defaults; --d-sae and --batch set D_SAE and BATCH for a run."""
PRECISION = "auto"
"""mini's TrainConfig.precision; --precision sets it."""
WARM_UP_BATCHES = 8
"""Batches of the one-epoch warm-up each trainer runs before its timed run."""
CANCEL_TARGET_S = 2.0
"""Longest time from cancel to Trainer.run() returning (the app's cancel must feel prompt)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_data(device: torch.device, d_in: int = 0, examples: int = 0):
    """(train, val, planted loadings): the sample recording, or with `d_in` one of d_in units with enough bins for
    `examples` training rows (the train split holds about 70 % of the bins)."""
    config = SampleConfig() if not d_in else SampleConfig(n_units=d_in, n_bins=max(examples * 3 // 2 + 2000, 10_000))
    recording = generate(config)
    trials = recording.metadata["trial"].to_numpy()
    split_of_trial = assign_splits(np.bincount(trials), seed=0)
    split = split_of_trial[trials]
    x = torch.from_numpy(recording.counts.astype(np.float32))
    loadings = np.zeros((recording.latents.height, x.shape[1]))
    g = recording.loadings
    loadings[g["latent_id"].to_numpy(), g["unit_id"].to_numpy()] = g["weight"].to_numpy()
    return x[split == 0].to(device), x[split == 1].to(device), loadings


def quality(x_val: torch.Tensor, recon: torch.Tensor, active_train: torch.Tensor, decoder: np.ndarray,
            loadings: np.ndarray) -> dict[str, float]:
    """FVU on val, dead fraction on train, MMCS of decoder rows against the planted loadings."""
    x, r = x_val.double().cpu(), recon.double().cpu()
    fvu = float(((x - r) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    unit = lambda m: m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    mmcs = float((unit(loadings) @ unit(decoder).T).max(1).mean())
    return {"fvu": round(fvu, 4), "dead_fraction": round(float((~active_train.cpu()).float().mean()), 4),
            "mmcs": round(mmcs, 4)}


def matmul_peak(device: torch.device) -> float:
    """Measured FLOP/s of a large matmul: fp32 on CPU, bf16 on GPU."""
    size, dtype = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 3)
    return 2 * size**3 / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- trainers --------------------------------------------------------------------------------------------
def train_mini(train, val, epochs, lr, device, n=1, output="clamped") -> tuple[float, list[dict[str, float]], dict]:
    stack = SAEStack(SAEConfig(architecture="batchtopk", d_sae=D_SAE, ks=(K,) * n, output=output), train.shape[1],
                     tuple(range(n)))
    stack.initialise_from_data(train[:10_000].cpu())
    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=lr, device=device.type, select_on_val=False,
                         precision=PRECISION)
    trainer = Trainer(stack, TrainData(train, val, device), config)
    sync(device)
    start = time.perf_counter()
    outcome = trainer.run()
    sync(device)
    seconds = time.perf_counter() - start
    results = []
    with torch.no_grad():
        code = stack.encode(train, use_threshold=True)
        active = torch.zeros(n * D_SAE, dtype=torch.bool, device=device)
        active[(code.row // train.shape[0]) * D_SAE + code.latent] = True
        stack.eval()
        recon = stack.decode(stack.encode(val, use_threshold=True), val.shape[0])
        decoders = stack.folded_weights()["W_dec"].cpu().numpy()
    for i in range(n):
        results.append(quality(val, recon[i], active.view(n, D_SAE)[i], decoders[i], LOADINGS))
    return seconds, results, {"examples": outcome.examples_seen}


def bf16(device: torch.device) -> bool:
    """Whether mini trains under bf16 autocast here (then the peers do too)."""
    return PRECISION == "bf16" or (PRECISION == "auto" and device.type == "cuda")


def train_sparsify(train, val, epochs, lr, device) -> tuple[float, dict[str, float]]:
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=D_SAE, k=K), device=device)
    sae.b_dec.data = train[:10_000].median(0).values.to(device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    since_fired = torch.zeros(D_SAE, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(0)
    steps = train.shape[0] // BATCH
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(train.shape[0], generator=generator).to(device)
        for s in range(steps):
            batch = train[order[s * BATCH:(s + 1) * BATCH]]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16(device)):
                out = sae(batch, dead_mask=since_fired > 50_000)
            loss = out.fvu + out.auxk_loss / 32
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_gradient_parallel_to_decoder_directions()
            optimizer.step()
            sae.set_decoder_norm_to_unit_norm()
            since_fired += BATCH
            since_fired[out.latent_indices.flatten()] = 0
    sync(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        active = torch.zeros(D_SAE, dtype=torch.bool, device=device)
        active[sae.encode(train).top_indices.flatten()] = True
        recon = sae(val).sae_out
    return seconds, quality(val, recon, active, sae.W_dec.detach().cpu().numpy(), LOADINGS)


def train_saelens(train, val, epochs, lr, device) -> tuple[float, dict[str, float]]:
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig

    torch.manual_seed(0)
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=K, d_in=train.shape[1], d_sae=D_SAE,
                                                          device=str(device)))
    steps = train.shape[0] // BATCH

    def batches():
        generator = torch.Generator().manual_seed(0)
        while True:
            order = torch.randperm(train.shape[0], generator=generator).to(device)
            for s in range(steps):
                yield train[order[s * BATCH:(s + 1) * BATCH]]

    config = SAETrainerConfig(total_training_samples=epochs * steps * BATCH, train_batch_size_samples=BATCH,
                              lr=lr, lr_end=lr, device=str(device), **({"autocast": True} if bf16(device) else {}))
    trainer = SAETrainer(config, sae, batches())
    sync(device)
    start = time.perf_counter()
    trainer.fit()
    sync(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        active = (sae.encode(train) > 0).any(0)
        recon = sae.decode(sae.encode(val))
    return seconds, quality(val, recon, active, sae.W_dec.detach().cpu().numpy(), LOADINGS)


def warmed_up(trainer, train, val, epochs):
    """trainer(train, val, epochs) after the same warm-up every trainer gets: one epoch of 8 batches on the
    first rows (kernels, allocator, thread pools, lazy imports and first-call caches are paid before timing)."""
    trainer(train[:WARM_UP_BATCHES * BATCH], val[:BATCH], 1)
    return trainer(train, val, epochs)


def cancel_seconds(train, val, lr, device) -> float:
    """Seconds from setting the cancel event (from another thread, a few steps into a long run) until
    Trainer.run() returns: how quickly the app's cancel takes effect."""
    stack = SAEStack(SAEConfig(architecture="batchtopk", d_sae=D_SAE, ks=(K,)), train.shape[1], (0,))
    stack.initialise_from_data(train[:10_000].cpu())
    cancel, running = threading.Event(), threading.Event()
    config = TrainConfig(epochs=1000, batch_size=BATCH, lr=lr, device=device.type, log_every=1, select_on_val=False)
    trainer = Trainer(stack, TrainData(train, val, device), config,
                      on_progress=lambda event: event.step >= 5 and running.set(), cancel=cancel)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("status", trainer.run().status))
    worker.start()
    if not running.wait(timeout=600):
        sys.exit("bench/train.py: training did not reach step 5 in 600 s")
    started = time.perf_counter()
    cancel.set()
    worker.join()
    seconds = time.perf_counter() - started
    if outcome.get("status") != "cancelled":
        sys.exit(f"bench/train.py: a cancelled run ended {outcome.get('status')!r}")
    return seconds


def main() -> None:
    global LOADINGS, D_SAE, BATCH, PRECISION
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sweep", type=int, default=8, help="SAEs trained together in the sweep (0: skip)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of every trainer, interleaved; each one's median counts")
    parser.add_argument("--cancel-repeat", type=int, default=5, help="cancels timed (0: skip)")
    parser.add_argument("--train-rows", type=int, default=0,
                        help="train on the first N rows of the train split only (0: all; for a quick look)")
    parser.add_argument("--d-in", type=int, default=0, help="units of a generated recording (0: the sample's 120)")
    parser.add_argument("--examples", type=int, default=0,
                        help="training rows (0: the whole train split); with --d-in, enough bins are generated")
    parser.add_argument("--d-sae", type=int, default=D_SAE, help="latents per SAE")
    parser.add_argument("--batch", type=int, default=BATCH, help="examples per step")
    parser.add_argument("--precision", default=PRECISION, choices=("auto", "fp32", "bf16"),
                        help="mini's arithmetic (auto: bf16 autocast on CUDA); the peers follow it on CUDA")
    args = parser.parse_args()
    for name in ("d_in", "examples", "train_rows"):
        if not 0 <= getattr(args, name) <= 10_000_000:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be from 0 to 10,000,000")
    if not 1 <= args.repeat <= 20:
        parser.error(f"--repeat {args.repeat}: must be from 1 to 20")
    for name in ("d_sae", "batch"):
        if not 1 <= getattr(args, name) <= 1_000_000:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be from 1 to 1,000,000")
    D_SAE, BATCH, PRECISION = args.d_sae, args.batch, args.precision
    device = pick_device(args.device)
    train, val, LOADINGS = load_data(device, args.d_in, args.examples)
    rows = args.examples or args.train_rows
    if rows and rows > train.shape[0]:
        sys.exit(f"bench/train.py: --examples {rows}: the train split has only {train.shape[0]} rows")
    if rows:
        train = train[:max(rows, BATCH)]
    examples = args.epochs * (train.shape[0] // BATCH) * BATCH
    log(f"{device}: train {tuple(train.shape)}, val {tuple(val.shape)}; {args.epochs} epochs = {examples:,} "
        f"examples; d_sae {D_SAE}, k {K}, batch {BATCH}")
    peak = matmul_peak(device)
    roofline = peak / (2 * train.shape[1] * D_SAE)
    log(f"matmul peak {peak / 1e9:,.1f} GFLOP/s → encoder roofline {roofline:,.0f} examples/s")
    result: dict[str, object] = {"bench": "train", "device": str(device), "epochs": args.epochs,
                                 "examples": examples, "d_in": train.shape[1], "d_sae": D_SAE, "k": K,
                                 "batch": BATCH, "lr": args.lr, "matmul_peak_gflops": round(peak / 1e9, 1),
                                 "matmul_peak_dtype": "float32" if device.type == "cpu" else "bfloat16",
                                 "precision": "bf16" if bf16(device) else "fp32",
                                 "warm_up_examples_each": WARM_UP_BATCHES * BATCH, "repeat": args.repeat}
    # Rounds: every trainer once per round, in the same order, so that a slow spell of a shared machine falls on
    # each alike; each one's median over the rounds counts (its runs are listed beside it).
    runs: dict[str, list[float]] = {}
    qualities: dict[str, object] = {}
    peers_missing: set[str] = set()
    trainers = [("mini", lambda t, v, e: train_mini(t, v, e, args.lr, device)),
                ("mini_linear_output", lambda t, v, e: train_mini(t, v, e, args.lr, device, output="linear")),
                ("sparsify", lambda t, v, e: train_sparsify(t, v, e, args.lr, device)),
                ("saelens", lambda t, v, e: train_saelens(t, v, e, args.lr, device))]
    if args.sweep:
        trainers.append(("sweep", lambda t, v, e: train_mini(t, v, e, args.lr, device, n=args.sweep)))
    for round_ in range(args.repeat):
        for name, trainer in trainers:
            if name in peers_missing:
                continue
            try:
                seconds, quality, *_ = warmed_up(trainer, train, val, args.epochs)
            except ImportError as error:
                log(f"{name}: not installed ({error}); run bench/setup_peers.sh")
                peers_missing.add(name)
                continue
            runs.setdefault(name, []).append(seconds)
            qualities.setdefault(name, quality)  # every run of a trainer is seeded alike: the same quality
            log(f"round {round_ + 1}/{args.repeat} {name:18} {examples / seconds:,.0f} examples/s")
    median = {name: float(np.median(seconds)) for name, seconds in runs.items()}

    def speed(name: str) -> dict[str, object]:
        return {"examples_per_s": round(examples / median[name]),
                "examples_per_s_runs": [round(examples / s) for s in runs[name]]}

    seconds = median["mini"]
    result["mini"] = {**speed("mini"), **qualities["mini"][0],
                      "encoder_gflops": round(examples / seconds * 2 * train.shape[1] * D_SAE / 1e9, 1),
                      "fraction_of_encoder_roofline": round(examples / seconds / roofline, 3)}
    result["mini_linear_output"] = {**speed("mini_linear_output"), **qualities["mini_linear_output"][0]}
    peers = {name: median[name] for name in ("sparsify", "saelens") if name in median}
    for name in peers:
        result[name] = {**speed(name), **qualities[name]}
        result[f"speedup_vs_{name}"] = round(peers[name] / seconds, 2)
        result[f"speedup_vs_{name}_by_round"] = by_round(runs[name], runs["mini"])
    if peers:
        result["speedup_vs_fastest_peer"] = round(min(peers.values()) / seconds, 2)
    if args.sweep:
        sweep_seconds, sweep = median["sweep"], qualities["sweep"]
        result["sweep"] = {
            "saes": args.sweep, "seconds": round(sweep_seconds, 1),
            "seconds_runs": [round(s, 1) for s in runs["sweep"]],
            "sae_examples_per_s": round(args.sweep * examples / sweep_seconds),
            "fvu_mean": round(float(np.mean([q["fvu"] for q in sweep])), 4),
            "dead_fraction_max": max(q["dead_fraction"] for q in sweep),
            "mmcs_min": min(q["mmcs"] for q in sweep),
            **{f"speedup_vs_{name}_one_after_another": round(args.sweep * s / sweep_seconds, 2)
               for name, s in peers.items()},
            **{f"speedup_vs_{name}_one_after_another_by_round": by_round([args.sweep * s for s in runs[name]],
                                                                         runs["sweep"])
               for name in peers},
        }
    for name in result.keys() & {"mini", "mini_linear_output", "sparsify", "saelens", "sweep"}:
        log(f"{name:18} {result[name]}")
    if args.cancel_repeat:
        cancels = [cancel_seconds(train, val, args.lr, device) for _ in range(args.cancel_repeat)]
        result["cancel"] = {"repeat": len(cancels), "seconds_median": round(float(np.median(cancels)), 4),
                            "seconds_max": round(max(cancels), 4), "target_seconds_max": CANCEL_TARGET_S,
                            "meets_target": max(cancels) <= CANCEL_TARGET_S}
        log(f"cancel    {result['cancel']}")
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def by_round(theirs: list[float], ours: list[float]) -> list[float]:
    """Their time over ours within each round: paired runs minutes apart, which a slow spell of the machine between
    rounds moves alike (the medians compare runs that may be rounds apart)."""
    return [round(t / o, 2) for t, o in zip(theirs, ours, strict=True)]


LOADINGS: np.ndarray

if __name__ == "__main__":
    main()
