"""Supernet training with the sandwich rule and in-place distillation (``eformer-train``)."""
