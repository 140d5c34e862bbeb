"""Pretraining on the synthetic world (DESIGN §4): losses, schedule, the loop, DDP, the held-out check."""
