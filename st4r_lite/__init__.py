"""st4r_lite: a compact, readable reproduction of St4RTrack (ICCV 2025) for teaching.

One feed-forward network reads a pair (anchor frame 0, frame j) and predicts two pointmaps in the anchor
camera's frame (the world):
  - ``track`` = ¹X¹_j: where every anchor pixel is at time j (head 1),
  - ``recon`` = ¹Xʲ_j: frame j's visible geometry at time j (head 2).

Modules (one concept each; import what you need, nothing heavy happens at import time):
  runtime     quick mode, devices, data paths, atomic file writes
  geometry    camera conventions: project/unproject, poses, focal (Weiszfeld), Umeyama Sim(3)
  world       the synthetic 4D world (analytic ray casting) and its dense ground truth
  worldtrack  WorldTrack / TAPVid-3D ``.npz`` reader and writer, named benchmarks
  views       Plotly 3D views (pointmaps, time sliders, track trails, frustums)
  model       the St4RTrack / DUSt3R network and its presets
  cli         the ``st4r-lite`` command line
"""

__version__ = "0.1.0"
