"""Detectors, the alert lifecycle, routing and sinks."""
