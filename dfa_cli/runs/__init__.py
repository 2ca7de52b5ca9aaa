"""A run's plumbing: its records, checkpoints, logging, progress, signals and one-sentence errors."""
