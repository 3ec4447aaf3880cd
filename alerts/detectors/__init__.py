"""Streaming anomaly detectors, one per module, all on one ABC."""
