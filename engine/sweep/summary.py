"""A sweep's trials as a person chooses among them: the Pareto front of L0 against val FVU (lower is better
on both), with stability and dead latents beside them. Every figure is from train and val only."""

from __future__ import annotations

import polars as pl


def pareto_front(l0: list[float | None], fvu: list[float | None]) -> list[bool]:
    """Which points no other point beats on both L0 and FVU (at most as high on both, lower on one); a point
    with a missing figure is on no front."""
    points = list(zip(l0, fvu, strict=True))
    front = []
    for i, (a, b) in enumerate(points):
        if a is None or b is None:
            front.append(False)
            continue
        front.append(not any(c is not None and d is not None and c <= a and d <= b and (c < a or d < b)
                             for j, (c, d) in enumerate(points) if j != i))
    return front


def with_front(trials: pl.DataFrame) -> pl.DataFrame:
    """sweep_trials rows with `pareto` (on the front of the finished trials)."""
    finished = trials["status"] == "finished"
    l0 = [v if ok else None for v, ok in zip(trials["val_l0"].to_list(), finished.to_list(), strict=True)]
    return trials.with_columns(pl.Series("pareto", pareto_front(l0, trials["val_fvu"].to_list()), pl.Boolean))


def trial_table(trials: pl.DataFrame) -> pl.DataFrame:
    """What `mini sweep show` prints: one row per trial, a ★ on the Pareto front."""
    marked = with_front(trials)
    return marked.select(
        pl.col("trial_id").alias("trial"),
        pl.when(pl.col("pareto")).then(pl.lit("★")).otherwise(pl.lit("")).alias("front"),
        pl.col("architecture").alias("arch"), "d_sae", "k", "loss", "seed", "status",
        pl.col("val_fvu").round(4), pl.col("val_l0").round(2),
        (pl.col("val_dead_fraction") * 100).round(1).alias("dead_%"), pl.col("stability").round(3),
        pl.col("train_fvu").round(4), pl.col("seconds").round(1), "host", "run_id",
        pl.col("error").str.slice(0, 60),
    )
