"""Test-time adaptation (docs/method.md §6): pseudo-label providers, occlusion mask and σ², the losses, the loop."""
