"""The screens the app opens by name (the palette, a key, another screen), each imported only when first
opened; tui.app opens them and tui.screens.help lists their keys."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScreenEntry:
    """A screen the app can open by name (from the palette, a key, or another screen)."""

    module: str
    """Module in tui/screens that defines it: imported only when first opened (fast start)."""
    cls: str
    title: str
    """The palette entry."""
    help: str
    needs: str | None
    """'run' (built with run_id=…), 'dataset' (dataset=… name) or None (stores only)."""


SCREENS: dict[str, ScreenEntry] = {
    "train": ScreenEntry("tui.screens.train", "TrainScreen", "Train", "Train a new run on the selected dataset",
                         "dataset"),
    "qc": ScreenEntry("tui.screens.qc", "QCScreen", "QC", "Quality of the open run's SAEs", "run"),
    "features": ScreenEntry("tui.screens.features", "FeaturesScreen", "Features",
                            "The open run's ranked features", "run"),
    "review": ScreenEntry("tui.screens.review", "ReviewScreen", "Review",
                          "Label the open run's features one by one", "run"),
    "validation": ScreenEntry("tui.screens.validation", "ValidationScreen", "Validation",
                              "Validations of the open run's labels", "run"),
    "sweep": ScreenEntry("tui.screens.sweep", "SweepScreen", "Sweeps",
                         "The sweeps: trials, Pareto front, promote a trial to a run", None),
    "sql": ScreenEntry("tui.screens.sql", "SQLScreen", "SQL", "Query the open database", None),
}
