"""The consortium node: plan, trunk-only federated aggregation on Flower, checkpoints, ledger."""

__version__ = "0.1.0"
