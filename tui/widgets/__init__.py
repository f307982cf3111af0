"""Widgets shared by the screens (one per module when substantial)."""
