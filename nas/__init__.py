"""Distillation-aware neural architecture search: teacher -> searched students, measured latency, SQL store."""

__version__ = "0.1.0"
