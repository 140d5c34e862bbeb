"""The St4RTrack / DUSt3R network: presets, blocks, heads, the network, our checkpoints, released weights."""
