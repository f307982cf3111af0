"""How quick the app is on a large run: start, next feature in Review, key press to committed label.

Builds a run of 1,000,000 examples × 200 units with one SAE of 4,096 features and k = 32 (about 32 M
activation rows) straight into a database file (bench/app_data.py; no training), then drives the real
app headless (`App.run_test`) with the real keys:

- start: a fresh process from launch (interpreter, imports, opening the file) to the first interactive
  frame, Home with its datasets and runs read;
- next feature: `j` in Review until the frame showing the next feature with every panel filled is
  laid out and drawn (prefetched, as a person moving through features sees it), and the same with the
  cache emptied first (a cold read);
- label: `x` to the moment its row is committed (Review then moves on), pressed once the feature has
  been on screen a moment and its neighbours have been read ahead (a person reads it first), and
  pressed once the neighbours' read ahead has begun, while it reads the database
  (`label_commit_busy_ms`);
- keys while ranking: the app ranks the same run in the background (`App.start_ranking`, what the Rank
  dialog starts from Features' `R` or the palette's `Rank run 1`: engine.analysis.rank.rank_run on the real run)
  while `j` is pressed in Review, a person's pace apart; each key is timed to the frame drawn, as the
  next feature is. The ranking is then cancelled, and the ranking tables must be exactly as before (or,
  where it finished first, hold the whole new ranking).

Keys arrive through the driver, as from a terminal, and the clock stops when the frame is drawn:
Pilot's `press` waits for the whole process to go idle in 20 ms steps, which would add 40 ms or more.

Wall-clock figures swing with the machine's load; the CPU seconds of the start (the child process,
start and exit) and of each next-feature step (this process, every thread) move much less.

Progress goes to stderr; the last line on stdout is one JSON object.
    .venv/bin/python bench/app.py                     # full size: ~2 min to build, ~1 min to measure
    .venv/bin/python bench/app.py --examples 100000 --features 1024 --k 16 --steps 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

TARGETS = {"start_s_p95": 0.5, "next_feature_ms_p95": 20.0, "next_feature_cold_ms_p95": 50.0,
           "label_commit_ms_p95": 5.0, "label_commit_busy_ms_p95": 10.0, "key_ms_while_ranking_p95": 100.0}
"""Issue 17's targets, on a quiet machine."""

READING_PACE_S = 0.25
"""While the app ranks, the time a person looks at a feature before the next key (after its neighbours'
prefetch has ended)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(values: list[float]) -> tuple[float, float]:
    """(median, p95) by the nearest-rank rule."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


# -- start: a fresh process per measurement ------------------------------------------------------------


async def _child_start(db_path: str) -> None:
    """Run in a child process: start the app headless and say READY once Home has read the database."""
    from store import Store
    from tui.app import MiniApp

    app = MiniApp(Store.open(db_path))
    async with app.run_test(size=(80, 24)) as pilot:
        runs = app.screen.query_one("#runs")
        while not (runs.display and runs.row_count):
            await pilot.pause(0.005)
        await pilot.pause()  # the frame with them is drawn
        print("READY", flush=True)


def measure_start(db_path: Path, repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds from launch to READY, and CPU seconds of the whole child (start and exit)."""
    seconds, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "--child-start", str(db_path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert child.stdout is not None
        line = child.stdout.readline()
        elapsed = time.perf_counter() - started
        child.wait(timeout=60)
        if line.strip() != "READY":
            raise SystemExit(f"bench/app.py: the app did not start: {child.stderr.read() if child.stderr else ''}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds.append(elapsed)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return seconds, cpu


# -- review: one app, many keys ----------------------------------------------------------------------------


def ranking_fingerprint(db_path: Path) -> dict[str, list[int]]:
    """Rows and a hash of every row of each table a ranking writes: equal only if nothing was written."""
    from store import Store
    from store.rankings import RANKING_TABLES

    with Store.open(db_path, read_only=True) as db:
        return {table: [int(v) for v in db.con.execute(
            f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {table} t").fetchone()]  # type: ignore[union-attr]
            for table in (*RANKING_TABLES, "analysis_epochs")}


async def measure_review(db_path: Path, steps: int, labels: int, ranking_keys: int) -> dict[str, object]:
    from textual import events

    from store import Store
    from tui.app import MiniApp
    from tui.screens.review import ReviewScreen

    app = MiniApp(Store.open(db_path), run_id=1)
    out: dict[str, object] = {}
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()

        async def until(condition, timeout: float = 600) -> None:
            deadline = time.perf_counter() + timeout
            while not condition():
                if time.perf_counter() > deadline:
                    raise SystemExit("bench/app.py: the screen did not answer in time")
                await asyncio.sleep(0.0005)

        started = time.perf_counter()
        app.action_open("review")
        await until(lambda: isinstance(app.screen, ReviewScreen) and app.screen.shown is not None)
        await pilot.pause()
        out["open_review_s"] = time.perf_counter() - started
        screen: ReviewScreen = app.screen  # type: ignore[assignment]
        log(f"  Review open in {out['open_review_s']:.2f} s (reads the dataset's arrays once)")
        await until(lambda: screen.context.by_feature)  # the SAE's activations ordered by feature
        out["order_activations_s"] = time.perf_counter() - started
        log(f"  activations ordered by feature after {out['order_activations_s']:.1f} s")
        await app.workers.wait_for_complete()

        cpu: list[float] = []

        def key(name: str) -> None:
            """A key arrives as from the terminal, through the driver. (pilot.press then waits for the
            process to go idle in 20 ms sleeps, twice: it would add 40 ms or more to every figure.)"""
            event = events.Key(name, name)
            event.set_sender(app)
            app._driver.send_message(event)

        async def frame_drawn() -> None:
            """Handle every message the key caused, then lay out and draw the frame now, as the
            screen's refresh timer would next tick (at most 1/60 s later)."""
            await pilot._wait_for_screen()
            app.screen._on_timer_update()

        async def read_ahead_done() -> None:
            """A person reads the feature before the next key: its neighbours are read ahead meanwhile
            (Review starts that READ_AHEAD_AFTER_S after a feature shows), untimed."""
            await until(lambda: screen.context.order[screen.index + 1] in screen._cache and not screen._loading)
            await pilot.pause()

        async def next_feature(cold: bool) -> float:
            target = screen.context.order[screen.index + 1]
            if cold:
                await app.workers.wait_for_complete()
                screen._cache.clear()
            begin, begin_cpu = time.perf_counter(), time.process_time()
            key("j")
            await until(lambda: screen.shown is not None and screen.shown.feature_id == target)
            await frame_drawn()
            cpu.append((time.process_time() - begin_cpu) * 1000)
            elapsed = (time.perf_counter() - begin) * 1000
            await read_ahead_done()
            return elapsed

        warm = [await next_feature(cold=False) for _ in range(steps)]
        out["next_feature_cpu_ms"], cpu = cpu, []
        cold = [await next_feature(cold=True) for _ in range(max(1, steps // 2))]
        out["next_feature_ms"], out["next_feature_cold_ms"] = warm, cold
        log(f"  next feature: median {summary(warm)[0]:.1f} ms (prefetched), {summary(cold)[0]:.1f} ms (cold)")

        async def label(read_first: bool) -> float:
            await until(lambda: screen.shown is not None and not screen._writer.busy)
            if read_first:
                await read_ahead_done()
            else:  # once the read ahead of the neighbours has begun
                await until(lambda: screen.shown is not None and not screen._writer.busy and bool(screen._loading))
            before = screen.last_saved
            begin = time.perf_counter()
            key("x")
            await until(lambda: screen.last_saved is not before)
            return (screen.last_saved.committed_at - begin) * 1000

        out["label_commit_ms"] = [await label(read_first=True) for _ in range(labels)]
        # x while the neighbours' read ahead is reading the database.
        out["label_commit_busy_ms"] = [await label(read_first=False) for _ in range(max(1, labels // 2))]
        log(f"  label commit: median {summary(out['label_commit_ms'])[0]:.1f} ms over {labels}, "
            f"{summary(out['label_commit_busy_ms'])[0]:.1f} ms pressed while prefetching")

        # Keys while the app ranks the same run in the background.
        await until(lambda: not screen._writer.busy and not screen._loading)
        await app.workers.wait_for_complete()
        ranking_started = time.perf_counter()
        if not app.start_ranking(1):
            raise SystemExit("bench/app.py: the app did not start ranking")
        while_ranking: list[float] = []
        for _ in range(ranking_keys):
            if app.ranking is None or not app.ranking.running:
                break  # it finished: later keys would not be "while ranking"
            step = 1 if screen.index + 1 < len(screen.context.order) else -1
            target = screen.context.order[screen.index + step]
            begin = time.perf_counter()
            key("j" if step == 1 else "k")
            await until(lambda target=target: screen.shown is not None and screen.shown.feature_id == target)
            await frame_drawn()
            while_ranking.append((time.perf_counter() - begin) * 1000)
            await until(lambda: not screen._loading)  # the neighbours' prefetch, untimed
            await asyncio.sleep(READING_PACE_S)
        out["key_ms_while_ranking"] = while_ranking
        state = app.ranking
        assert state is not None
        out["ranking_s"] = time.perf_counter() - ranking_started
        out["ranking_stage"] = (f"SAE {min(state.done + 1, state.total)} of {state.total}: " if state.total else ""
                                ) + state.stage if state.running else state.status
        app.cancel_ranking()
        cancelled = time.perf_counter()
        await until(lambda: app.ranking is not None and not app.ranking.running)
        out["ranking_cancel_s"] = time.perf_counter() - cancelled
        out["ranking_status"] = app.ranking.status
        log(f"  {len(while_ranking)} keys while ranking: median {summary(while_ranking)[0]:.1f} ms; the ranking "
            f"was at '{out['ranking_stage']}' after {out['ranking_s']:.0f} s, {out['ranking_status']} "
            f"{out['ranking_cancel_s']:.1f} s after cancel")
    return out


def measure_reads(db_path: Path, n: int) -> dict[str, list[float]]:
    """One feature's panel read (engine.analysis.review.load_feature), from the ordered copy and by scanning."""
    import numpy as np

    from engine.analysis.review import load_context, load_feature
    from store import Store

    times: dict[str, list[float]] = {"ordered": [], "scan": []}
    with Store.open(db_path) as db:
        context = load_context(db, 1, 1)
        rng = np.random.default_rng(0)
        for feature_id in rng.choice(context.order, size=n, replace=False):
            for mode in ("ordered", "scan"):
                context.by_feature = mode == "ordered"
                begin = time.perf_counter()
                load_feature(db, context, int(feature_id))
                times[mode].append((time.perf_counter() - begin) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=10, help="app starts measured")
    parser.add_argument("--steps", type=int, default=200, help="next-feature presses measured")
    parser.add_argument("--labels", type=int, default=200, help="labels committed and timed")
    parser.add_argument("--reads", type=int, default=20, help="panel reads timed on each path")
    parser.add_argument("--ranking-keys", type=int, default=100, help="keys timed while the app ranks the run")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary directory goes")
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the built database here and reuse it when it exists (it is copied first)")
    parser.add_argument("--child-start", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_start:
        asyncio.run(_child_start(args.child_start))
        return 0

    from app_data import LargeRun, build_large_run

    spec = LargeRun(n_examples=args.examples, n_units=args.units, d_sae=args.features, k=args.k)
    work = Path(tempfile.mkdtemp(prefix="mini-bench-app-", dir=args.dir))
    try:
        db_path = work / "large.duckdb"
        if args.db is not None and args.db.exists():
            log(f"reusing {args.db}")
            shutil.copy(args.db, db_path)
        else:
            log(f"building {spec.n_examples:,} examples × {spec.n_units} units, {spec.d_sae:,} features, k {spec.k}")
            begin = time.perf_counter()
            build_large_run(db_path, spec)
            log(f"  built in {time.perf_counter() - begin:.0f} s")
            if args.db is not None:
                shutil.copy(db_path, args.db)
        log(f"timing {args.repeat} starts")
        starts, start_cpu = measure_start(db_path, args.repeat)
        log(f"  start: median {summary(starts)[0]:.2f} s ({summary(start_cpu)[0]:.2f} s CPU)")
        log("timing Review")
        stored_ranking = ranking_fingerprint(db_path)
        review = asyncio.run(measure_review(db_path, args.steps, args.labels, args.ranking_keys))
        after = ranking_fingerprint(db_path)
        if review["ranking_status"] == "cancelled":
            whole = after == stored_ranking  # a cancelled ranking writes nothing
        else:  # it finished before the keys did: its ranking replaced the stored one, whole
            whole = review["ranking_status"] == "ranked" and after["rankings"][0] == spec.d_sae
        if not whole:
            raise SystemExit(f"bench/app.py: the {review['ranking_status']} ranking left the ranking tables "
                             f"half-written: {stored_ranking} before, {after} after")
        log(f"timing {args.reads} panel reads per path")
        reads = measure_reads(db_path, min(args.reads, args.features))
        from store import Store

        with Store.open(db_path, read_only=True) as db:
            rows = int(db.scalar("SELECT count(*) FROM activations"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result: dict[str, object] = {"bench": "app", "examples": spec.n_examples, "features": spec.d_sae, "k": spec.k,
                                 "units": spec.n_units, "activation_rows": rows}
    for name, values, scale in (("start_s", starts, 1), ("start_cpu_s", start_cpu, 1),
                                ("next_feature_ms", review["next_feature_ms"], 1),
                                ("next_feature_cpu_ms", review["next_feature_cpu_ms"], 1),
                                ("next_feature_cold_ms", review["next_feature_cold_ms"], 1),
                                ("label_commit_ms", review["label_commit_ms"], 1),
                                ("label_commit_busy_ms", review["label_commit_busy_ms"], 1),
                                ("key_ms_while_ranking", review["key_ms_while_ranking"], 1),
                                ("feature_read_ordered_ms", reads["ordered"], 1),
                                ("feature_read_scan_ms", reads["scan"], 1)):
        median, p95 = summary(values)  # type: ignore[arg-type]
        result[f"{name}_median"], result[f"{name}_p95"] = round(median * scale, 3), round(p95 * scale, 3)
    result["open_review_s"] = round(review["open_review_s"], 3)  # type: ignore[arg-type]
    result["order_activations_s"] = round(review["order_activations_s"], 2)  # type: ignore[arg-type]
    result["ranking_stage"], result["ranking_status"] = review["ranking_stage"], review["ranking_status"]
    result["ranking_s"] = round(review["ranking_s"], 1)  # type: ignore[arg-type]
    result["ranking_cancel_s"] = round(review["ranking_cancel_s"], 2)  # type: ignore[arg-type]
    result["ranking_tables_whole"] = whole
    result["repeats"] = {"start": args.repeat, "next_feature": args.steps, "label": args.labels,
                         "key_while_ranking": len(review["key_ms_while_ranking"])}  # type: ignore[arg-type]
    result["cpus"], result["load_average_1m"] = os.cpu_count(), round(os.getloadavg()[0], 2)
    result["targets"] = TARGETS
    result["meets_targets"] = {key: result[key] <= target for key, target in TARGETS.items()}  # type: ignore[operator]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
