"""Example models of your own for the feedback API (docs/custom-models.md)."""
