"""Analysis: what a trained SAE's features signal. Associations with natural variables and their nulls,
selectivity, MIS and stability, the ranking with its suggestions (predicates), and what Review and the
report read of a feature (tuning curves, peri-event histograms)."""
