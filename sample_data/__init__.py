"""Deterministic synthetic recordings with planted ground truth (the demo's data)."""

from sample_data.generator import SampleConfig, SampleRecording, generate

__all__ = ["SampleConfig", "SampleRecording", "generate"]
