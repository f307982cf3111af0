"""What the Features table shows (tui/screens/features.py): its columns, sort keys and prompts, and the text of
its cells and of the line under it."""

from __future__ import annotations

import polars as pl

# (frame column, header); what the table shows, in order. What a person labelling looks at first (score,
# suggestion, label, validation) fits in 80 columns; the parts of the score and the density follow.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("rank", "rank"), ("feature_id", "feature"), ("score_shown", "score"), ("suggestion", "first suggestion"),
    ("label_text", "label"), ("valid_text", "valid"), ("association_shown", "assoc"), ("mis_shown", "MIS"),
    ("stability_shown", "stab"), ("density_pct", "density %"),
)
TEXT_WIDTH = 22
"""Cells the suggestion and label columns take at most at 80 columns (longer text ends with …); wider
terminals give them half of the extra width each."""


def text_width(terminal_width: int) -> int:
    return TEXT_WIDTH + max(0, terminal_width - 80) // 2


# Sort keys `s` cycles through, and whether each starts highest first.
SORTS: tuple[tuple[str, bool], ...] = (
    ("rank", False), ("score", True), ("association", True), ("mis", True), ("stability", True),
    ("density", True), ("feature_id", False),
)
SORT_NAMES = {"feature_id": "feature"}
SORTED_COLUMN = {"score": "score_shown", "association": "association_shown", "mis": "mis_shown",
                 "stability": "stability_shown", "density": "density_pct"}
"""The table column that shows each sort key."""
PROMPTS = {"filter": "filter /", "find": "find", "rank": "rank :", "feature": "feature #"}


def display_frame(features: pl.DataFrame) -> pl.DataFrame:
    """ranked_features with what the table shows: label (verdict mark, auto marked, text), valid, and the
    numbers rounded (sorting and filtering use the exact ones)."""
    mark = (pl.when(pl.col("verdict") == "accept").then(pl.lit("✓ "))
            .when(pl.col("verdict") == "reject").then(pl.lit("✗ rejected"))
            .when(pl.col("verdict") == "unsure").then(pl.lit("? unsure")).otherwise(pl.lit("")))
    text = pl.when(pl.col("verdict") == "accept").then(pl.col("label").fill_null("")).otherwise(pl.lit(""))
    auto = pl.when(pl.col("label_source") == "auto").then(pl.lit("(auto) ")).otherwise(pl.lit(""))
    # Both verdicts: `yes` validated (generalises and signature-specific), `gen` generalises only, `spec`
    # signature-specific only, `no` neither; `n/t` not testable, `–` not validated.
    valid = (pl.when(pl.col("testable").not_()).then(pl.lit("n/t"))
             .when(pl.col("testable").is_null()).then(pl.lit("–"))
             .when(pl.col("generalises") & pl.col("signature_specific")).then(pl.lit("yes"))
             .when(pl.col("generalises")).then(pl.lit("gen"))
             .when(pl.col("signature_specific")).then(pl.lit("spec")).otherwise(pl.lit("no")))
    prefix = pl.concat_str([mark, auto])
    return features.with_columns(
        prefix.alias("label_prefix"), text.alias("label_name"), pl.concat_str([prefix, text]).alias("label_text"),
        valid.alias("valid_text"),
        # Decimals with a fixed number of places: the table right-aligns them and measures every one.
        (pl.col("density") * 100).round(2).cast(pl.Decimal(7, 2)).alias("density_pct"),
        *(pl.col(c).round(3).cast(pl.Decimal(6, 3)).alias(f"{c}_shown")
          for c in ("score", "association", "mis", "stability")),
    )


def fit_label(parts: dict, width: int) -> str:
    """The label cell in `width` cells: its mark (and `(auto) `) whole, the name fitted like a predicate."""
    from tui.predicate_text import fit

    prefix, name = parts["label_prefix"], parts["label_name"]
    return prefix + fit(name, max(4, width - len(prefix))) if name else prefix


def detail_text(row: dict) -> str:
    """The line under the table for the row under the cursor: its first suggestion and label whole."""
    from tui.predicate_text import readable

    parts = [f"#{row['feature_id']}", f"suggests {readable(row['suggestion'])}" if row["suggestion"]
             else "no suggestion"]
    if row["label_text"]:
        label = row["label_text"]
        if row.get("label_predicate") and row["label_predicate"] != row.get("label"):
            label += f" (tests {readable(row['label_predicate'])})"
        parts.append(f"label {label}")
    return " · ".join(parts)
