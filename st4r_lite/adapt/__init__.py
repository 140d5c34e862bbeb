"""Test-time adaptation (DESIGN §6): pseudo-label providers, occlusion mask and σ², the losses, the loop."""
