"""The training loop and its parts: the trainer, its fast steps, optimizers, schedules, losses and measurements."""
