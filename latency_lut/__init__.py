"""Latency lookup tables: device backends, resumable build, calibrated prediction, validation."""
