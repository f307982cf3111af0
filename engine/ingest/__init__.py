"""Ingest: recordings in, datasets out. Readers of every format (counts, spike times, NWB, captured model
activations), binning and preprocessing, behaviour and tracking, trials, the train/val/test split, and the
natural variables each dataset carries. Everything later in the pipeline reads what this stage stored."""
