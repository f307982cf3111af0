"""Validation: labels people make, each label tested on the held-out test split (does it generalise? are
its signature units specific?), the verdicts in words, frozen label sets, and the report."""
