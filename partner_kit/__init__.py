"""The partner's kit: sparse multitask model (shared trunk, private heads), training, metrics, prediction."""

__version__ = "0.1.0"
