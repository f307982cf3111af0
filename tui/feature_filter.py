"""The Features screen's filter language, turned into a polars expression over `store.review.ranked_features`.

Terms are separated by spaces and must all hold (quote a phrase with spaces: "condition = 2"):

- `word`: case-insensitive text in the first suggestion, the label's name or its predicate;
- `COLUMN OP NUMBER`: rank, feature, score, association (assoc), mis, stability (stab), density with
  >, >=, <, <=, =, != (density also as a percentage: `density<1%`), e.g. `score>0.5`;
- `label:none|any|accept|reject|unsure|auto|person`;
- `valid:yes|gen|spec|no|none|untestable`, the current label's latest validation attempt: `yes` validated
  (generalises and signature-specific), `gen` generalises (signature-specific or not), `spec`
  signature-specific (generalising or not), `no` tested but not validated (either verdict failed), `none`
  not validated yet, `untestable` no predicate (or figures that cannot be computed on test).
"""

from __future__ import annotations

import operator
import re
import shlex

import polars as pl

NUMERIC = {"rank": "rank", "feature": "feature_id", "score": "score", "association": "association",
           "assoc": "association", "mis": "mis", "stability": "stability", "stab": "stability",
           "density": "density"}
OPERATORS = {">=": operator.ge, "<=": operator.le, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
             "=": operator.eq}
_COMPARISON = re.compile(r"^(?P<column>[a-z_]+)\s*(?P<op>>=|<=|!=|>|<|=)\s*(?P<number>\S+)$", re.IGNORECASE)
LABEL_WORDS = {
    "none": pl.col("verdict").is_null(),
    "any": pl.col("verdict").is_not_null(),
    "accept": pl.col("verdict") == "accept",
    "reject": pl.col("verdict") == "reject",
    "unsure": pl.col("verdict") == "unsure",
    "auto": pl.col("label_source") == "auto",
    "person": pl.col("label_source") == "person",
}
_GENERAL = pl.col("testable").fill_null(False) & pl.col("generalises").fill_null(False)
_SPECIFIC = pl.col("testable").fill_null(False) & pl.col("signature_specific").fill_null(False)
VALID_WORDS = {
    "yes": _GENERAL & _SPECIFIC,
    "gen": _GENERAL,
    "spec": _SPECIFIC,
    "no": pl.col("testable").fill_null(False) & ~(_GENERAL & _SPECIFIC),
    "none": pl.col("testable").is_null(),
    "untestable": ~pl.col("testable").fill_null(True),
}


class FilterError(ValueError):
    """A term that cannot be read; the message names it and says what would work."""


def _text_term(word: str) -> pl.Expr:
    needle = word.lower()
    return pl.any_horizontal(
        pl.col(c).fill_null("").str.to_lowercase().str.contains(needle, literal=True)
        for c in ("suggestion", "label", "label_predicate"))


def _term(term: str) -> pl.Expr:
    if any(c.isspace() for c in term):  # a quoted phrase is text, even `"condition = 2"`
        return _text_term(term)
    key, colon, word = term.partition(":")
    if colon and key.lower() in ("label", "valid"):
        words = LABEL_WORDS if key.lower() == "label" else VALID_WORDS
        if word.lower() not in words:
            raise FilterError(f"'{term}': {key.lower()}: takes one of {', '.join(words)}")
        return words[word.lower()]
    match = _COMPARISON.match(term)
    if match and match["column"].lower() in NUMERIC:
        column, raw = NUMERIC[match["column"].lower()], match["number"]
        scale = 1.0
        if column == "density" and raw.endswith("%"):
            raw, scale = raw[:-1], 0.01
        try:
            number = float(raw) * scale
        except ValueError:
            raise FilterError(f"'{term}': '{match['number']}' is not a number") from None
        return OPERATORS[match["op"]](pl.col(column), number).fill_null(False)
    if match:
        raise FilterError(f"'{term}': no column '{match['column']}' (columns: {', '.join(sorted(set(NUMERIC)))};"
                          f" to find text, quote it: \"{match['column']} {match['op']} {match['number']}\")")
    if any(op in term for op in OPERATORS):
        raise FilterError(f"'{term}': write a comparison as COLUMN OP NUMBER without spaces, e.g. score>0.5")
    return _text_term(term)


def parse_filter(text: str) -> pl.Expr | None:
    """The expression for `text` (None for an empty filter); FilterError when a term cannot be read."""
    try:
        terms = shlex.split(text)
    except ValueError as error:
        raise FilterError(f"{error} (close the quote)") from None
    expressions = [_term(term) for term in terms]
    if not expressions:
        return None
    return pl.all_horizontal(expressions)
