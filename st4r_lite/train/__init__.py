"""Pretraining on the synthetic world (docs/method.md §4): losses, schedule, the loop, DDP, the held-out check."""
