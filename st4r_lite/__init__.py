"""st4r_lite: a compact, readable reproduction of St4RTrack (ICCV 2025) for teaching.

One feed-forward network reads a pair (anchor frame 0, frame j) and predicts two pointmaps in the anchor
camera's frame (the world):
  - ``track`` = ¹X¹_j: where every anchor pixel is at time j (head 1),
  - ``recon`` = ¹Xʲ_j: frame j's visible geometry at time j (head 2).

Subpackages, in the order of the pipeline (video → pairs → pointmaps → cameras → losses → metrics → report;
docs/architecture.md). A module imports only its own layer and the ones above it in this list, never a later one;
nothing heavy happens at import time:
  runtime        quick mode, devices, data paths, atomic file writes
  geometry/      pinhole (project/unproject, poses, focal, Umeyama Sim(3)), camera + pnp (cameras from
                 pointmaps, docs/method.md §5), track_metrics (APD / EPE after median or Sim(3) alignment)
  model/         config, blocks, heads, network: the St4RTrack / DUSt3R network; checkpoint, pretrained
  world/         the synthetic 4D world: scene, raycast, textures, render (clips + dense ground truth);
                 worldtrack (the WorldTrack / TAPVid-3D ``.npz`` format), benchmarks (named sets)
  train/         losses, schedule, loop (pretraining, docs/method.md §4, resumable), distributed (DDP), checkpoint
                 (the training file), heldout (the held-out quality bar)
  adapt/         pseudo_labels (the provider interface), sim_labels, lk_tracker, online (providers), occlusion,
                 variants, config, losses, loop: test-time adaptation and the course's proposal (docs/method.md §6)
  eval/          evaluate (world-frame evaluation, docs/method.md §7), benchmark_metrics, baselines (the peers)
  app/           your own video: video (reading), frames (network size), run, views + sequence_view (Plotly 3D)
  studies/       ablation (+ ablation_stats, report), adapt_compare, ceiling, bench, video_memory, label_stats,
                 world_stats: the measurements behind the course's numbers (``python -m st4r_lite.studies.NAME``)
  demo           the whole pipeline on the embedded default (``make demo``)
  cli/           the ``st4r-lite`` command line, one module per command group
The course's own tooling (slides, notebook_sync, the vendored reveal.js) lives in ``course/`` beside the package.
"""

__version__ = "0.1.0"
