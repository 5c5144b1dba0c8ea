"""Partner data preparation: assay files -> keyed fingerprints, scaffold folds and sparse task matrices."""

__version__ = "0.1.0"
