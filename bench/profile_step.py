"""Where one CPU training step's time goes, at bench/train.py's shapes (d_sae 512, k 8, batch 1024, d_in 120).

    .venv/bin/python bench/profile_step.py              # one SAE
    .venv/bin/python bench/profile_step.py --saes 8     # the 8-SAE stack

Runs the Trainer's own step (the same calls, in the same order as Trainer.run) on the sample recording's train
split, with each phase timed by wrapping the stack's methods (CPU work is synchronous, so a wall clock around a
call is that call's cost): the dense encoder matmul and selection (or, on a CPU with hardware bf16, the screened
selection in their place: engine.sae.screened_selection), building the entries, the rest of the forward
(sparse encode/decode, output, loss), AuxK, backward, the decoder-gradient projection, Adam and the
after-step bookkeeping. Also prints torch.profiler's count of operator calls per step. Prints a table to
stderr and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train import BATCH, D_SAE, K, load_data
from engine.sae.model import SAEConfig, SAEStack
from engine.sae.train import TrainConfig, TrainData, Trainer

PHASES = ("encoder matmul", "selection", "screened selection", "entries", "forward rest", "auxk", "backward",
          "decoder-grad projection", "adam", "after-step bookkeeping")


def timed(totals: dict[str, float], name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    train, val, _ = load_data(cpu)
    stack = SAEStack(SAEConfig(architecture="batchtopk", d_sae=D_SAE, ks=(K,) * args.saes), train.shape[1],
                     tuple(range(args.saes)))
    stack.initialise_from_data(train[:10_000])
    trainer = Trainer(stack, TrainData(train, val, cpu), TrainConfig(epochs=1000, batch_size=BATCH, device="cpu"))
    totals: dict[str, float] = defaultdict(float)
    # Nested phases (matmul, selection, entries, AuxK run inside forward) are timed inside and subtracted.
    # "screened selection" (a CPU with hardware bf16, engine.sae.screened_selection) is the bf16 screen and the
    # float32 pre-activations of the entries that pass: it takes the place of the matmul and the selection.
    for attribute, name in (("_pre_activations", "encoder matmul"), ("_select", "selection"),
                            ("_screened_select", "screened selection"), ("_entries", "entries"), ("_aux_loss", "auxk")):
        setattr(stack, attribute, timed(totals, name, getattr(stack, attribute)))
    batches = (batch for epoch in range(1000) for batch in trainer.data.batches(epoch, BATCH, 0))

    # Trainer.train_step, its parts timed: the forward pass (with the phases inside it above), backward,
    # the decoder-gradient projection, Adam and the bookkeeping after the step.
    stack.forward = timed(totals, "forward", stack.forward)
    trainer.optimizer.step = timed(totals, "adam", trainer.optimizer.step)
    stack.remove_parallel_decoder_grad = timed(totals, "decoder-grad projection", stack.remove_parallel_decoder_grad)
    stack.after_step = timed(totals, "after-step bookkeeping", stack.after_step)
    torch.Tensor.backward = timed(totals, "backward", torch.Tensor.backward)

    def step() -> None:
        trainer._recent_from = trainer.step  # as each check does: the per-step finiteness record starts anew
        trainer.train_step(next(batches))

    for _ in range(20):  # warm-up: first calls, allocator, thread pool
        step()
    totals.clear()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = time.perf_counter() - started
    totals["forward rest"] = totals.pop("forward") - sum(totals[p] for p in ("encoder matmul", "selection",
                                                                              "screened selection", "entries", "auxk"))
    per_step_us = {p: round(totals[p] / args.steps * 1e6) for p in PHASES}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(10):
            step()
    top_level_ops = sum(event.count for event in profiler.key_averages() if event.key.startswith("aten::")) / 10
    step_us = wall / args.steps * 1e6
    print(f"{args.saes} SAE(s), {args.steps} steps: {step_us:,.0f} µs/step = {BATCH / step_us * 1e6:,.0f} "
          f"examples/s; {top_level_ops:.0f} aten calls per step (nested included)", file=sys.stderr)
    for phase, us in per_step_us.items():
        print(f"  {phase:26} {us:6,} µs  {us / step_us:6.1%}", file=sys.stderr)
    print(json.dumps({"bench": "profile_step", "saes": args.saes, "steps": args.steps, "step_us": round(step_us),
                      "examples_per_s": round(BATCH / step_us * 1e6), "aten_calls_per_step": round(top_level_ops),
                      "phase_us": per_step_us}))


if __name__ == "__main__":
    main()
