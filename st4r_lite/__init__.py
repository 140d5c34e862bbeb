"""st4r_lite: a compact, readable reproduction of St4RTrack (ICCV 2025) for teaching.

One feed-forward network reads a pair (anchor frame 0, frame j) and predicts two pointmaps in the anchor
camera's frame (the world):
  - ``track`` = ¹X¹_j: where every anchor pixel is at time j (head 1),
  - ``recon`` = ¹Xʲ_j: frame j's visible geometry at time j (head 2).

Modules (one concept each; import what you need, nothing heavy happens at import time), in the order a
student meets them:
  runtime        quick mode, devices, data paths, atomic file writes
  geometry       camera conventions: project/unproject, poses, focal (Weiszfeld), Umeyama Sim(3)
  world          the synthetic 4D world and its dense ground truth (scene, raycast, textures: its parts)
  worldtrack     WorldTrack / TAPVid-3D ``.npz`` reader and writer, named benchmarks
  views          Plotly 3D views (pointmaps, time sliders, track trails, frustums)
  config, blocks, heads, model   the St4RTrack / DUSt3R network, its presets and parts
  checkpoint, pretrained         our checkpoints, released DUSt3R-family weights (parity-tested)
  losses, schedule, train, distributed   pretraining (DESIGN §4), resumable, DDP
  bench          pairs/s and peak memory of a preset
  metrics, heldout, ceiling      APD / EPE, the held-out quality bar, and how far any model can beat 'static'
  camera, pnp    cameras from pointmaps (DESIGN §5)
  pseudo_labels, sim_labels, lk_tracker, online   pseudo-label providers for adaptation
  occlusion, adapt_losses, adapt, adapt_compare   test-time adaptation and the course's proposal (DESIGN §6)
  evaluate, eval_metrics, baselines              world-frame evaluation and the peers (DESIGN §7)
  ablation, ablation_stats, report               the reproducible ablation and its HTML report
  video, run, video_memory                       your own video
  demo, slides, notebook_sync                    the whole pipeline, the decks, the notebooks' twins
  cli            the ``st4r-lite`` command line
"""

__version__ = "0.1.0"
