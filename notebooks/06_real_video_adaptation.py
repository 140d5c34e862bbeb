# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/st4r-lite/st4r_lite/blob/main/notebooks/06_real_video_adaptation.ipynb)
#
# # 06 · Adapting to "real" video: pseudo-labels, an occlusion mask and σ²
#
# **Goals.** After this notebook you can
# 1. say what pseudo-labels a video without 4D ground truth offers (2D tracks, mono-depth) and how they fail
#    (under occlusion a tracker latches onto the occluder or wanders off);
# 2. write the three adaptation losses of St4RTrack (L_traj, L_depth, L_align) and compute them from the
#    network's two pointmaps and the cameras solved from them;
# 3. build the course's **occlusion mask** from the two pointmaps and check it against ground-truth visibility;
# 4. explain the **σ² weighting** ρ(r)/σ² + log σ² and why it turns down unreliable points;
# 5. run a short adaptation and compare the baseline with the proposal (mask + σ²).
#
# **Time.** Quick mode (CPU): about a minute. Full mode (GPU): a few minutes.
#
# The "real" videos here are the synthetic world's `wild` domain (other textures, light changes, blur, noise,
# faster motion, more occlusion): the ground truth exists, so we can *measure* what adaptation does, but the
# adaptation itself never sees it, only pseudo-labels.

# %%
# Setup. On Colab this installs st4r_lite from its repository and leaves Colab's own torch alone.
import os
import subprocess
import sys

if "google.colab" in sys.modules and not os.path.isdir("st4r_lite_repo"):
    subprocess.run(["git", "clone", "--depth", "1", "https://github.com/st4r-lite/st4r_lite", "st4r_lite_repo"],
                   check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./st4r_lite_repo"], check=True)
    os.environ["ST4R_DATA"] = os.path.abspath("st4r_lite_repo/data")  # the shipped checkpoint and results

import math
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from st4r_lite.app import views
from st4r_lite.adapt import loop
from st4r_lite.adapt import losses, occlusion
from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.world import render
from st4r_lite.eval.adaptation import VideoWithTruth, adapt_and_score
from st4r_lite.geometry.pinhole import project, transform_points
from st4r_lite.model import resolve
from st4r_lite.model.pairs import predict_video
from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.pseudo_labels import pseudo_label_error_stats
from st4r_lite.runtime import pick_device, quick_mode, repo_data_dir
from st4r_lite.studies import adapt_compare

QUICK = quick_mode()
device = pick_device()
views.use_notebook_renderer()   # figures show in JupyterLab, Colab and exported HTML
print(f"quick mode: {QUICK}, device: {device}")

# %% [markdown]
# ## 1. A "real" video and its pseudo-labels
#
# One `wild` clip (16 frames, 64×96; the first wild clip of the `worldtrack-lite` benchmark). Query points
# p_n are anchor pixels on a grid (stride 4). A pseudo-label provider returns, for every frame j,
# x̃_{j,n} (where it thinks p_n is), a validity flag (its own visibility guess), and a mono-depth d̃_j known
# only up to scale. Two providers: the **simulated tracker** (ground truth plus the errors real trackers make,
# with known strengths) and **Lucas–Kanade** (a classical tracker that works on any video).

# %%
clip = render.generate_clips(1, frames=16, height=64, width=96, domain="wild", seed=600_000)
vid = VideoWithTruth.from_clip(clip, 0)
queries = vid.queries(stride=4)
T, H, W = vid.video.shape[0], vid.video.shape[2], vid.video.shape[3]
gt_2d, gt_vis = vid.gt.tracks_2d(queries)          # (T, N, 2) and (T, N): for *measuring* only

labels = {name: make_provider(name, "sim", ground_truth=vid.gt, seed=0)(vid.video, queries) for name in ("sim", "lk")}
for name, lab in labels.items():
    stats = pseudo_label_error_stats(lab, gt_2d, gt_vis, vid.gt.depth)
    print(f"{name:>3}: {stats.summary()}")
print(f"{int(queries.shape[0])} queries, {100 * gt_vis[1:].float().mean():.0f}% of (frame, point) entries visible")

# %% [markdown]
# The error where the ground-truth point is **occluded** is many times the error where it is visible: those
# labels point at the occluder (or nowhere). If the provider still marks them valid, they teach the network
# that the anchor point moved with the occluder. The panels show three frames: the pseudo-tracks coloured by
# their error (px), crosses where the point is actually hidden.

# %%
lab = labels["sim"]
err = (lab.tracks_2d - gt_2d).norm(dim=-1)
show = [T // 3, 2 * T // 3, T - 1]
fig = make_subplots(1, 3, subplot_titles=[f"frame {j}" for j in show], horizontal_spacing=0.02)
for i, j in enumerate(show):
    img = (vid.video[j].permute(1, 2, 0) * 255).round().byte().numpy()
    fig.add_trace(go.Image(z=img), 1, i + 1)
    for hidden, symbol in ((False, "circle"), (True, "x")):
        sel = (gt_vis[j] != hidden) & lab.track_valid[j]
        fig.add_trace(go.Scatter(
            x=lab.tracks_2d[j, sel, 0], y=lab.tracks_2d[j, sel, 1], mode="markers",
            marker=dict(symbol=symbol, size=5, color=err[j, sel].clamp(max=10), colorscale="Turbo", cmin=0, cmax=10,
                        showscale=i == 0 and not hidden, colorbar=dict(title="px", len=0.8)),
            name="occluded (marked valid)" if hidden else "visible", showlegend=i == 0), 1, i + 1)
fig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.05))
fig.show()
assert err[1:][gt_vis[1:]].nanmean() < err[1:][~gt_vis[1:]].nanmean(), "occluded labels must be the worse ones"

# %% [markdown]
# ## 2. The network's view: pointmaps, cameras, reprojected tracks
#
# The model predicts for each pair (0, j) the **track** map ¹X¹_j (where each anchor pixel is at time j) and
# the **recon** map ¹Xʲ_j (what frame j sees), both in the anchor camera's frame. The cameras come from the
# predictions themselves (notebook 05): K from the anchor pair, the pose of frame j by PnP on recon_j. Then
#
# $$\hat x_{j,n} = \pi\big(K\, T^{cam_j}_{world}\; \text{track}_j(p_n)\big).$$
#
# We use the shipped `data/tiny.pt`; without it a freshly initialised network stands in (the numbers then mean
# little, the code path is the same).

# %%
model = resolve.load(None, device)           # data/tiny.pt; an untrained tiny model (said) when it is missing
print("model:", resolve.describe(None))

cfg = AdaptConfig(variant="baseline")
out = predict_video(model, vid.video * 2 - 1)                  # PairOutput, B = T pairs (0, j)
with torch.no_grad():
    K, T_world_cam, status = loop.cameras_from_prediction(out, cfg, 0, False)
print(f"f = {float(K[0, 0]):.1f} px (true {float(vid.gt.K[0, 0]):.1f}); camera status: {status.count('ok')}/{T} ok")

track_q = occlusion.sample_map(out.track, queries[None].expand(T, -1, -1).to(out.track))   # (T, N, 3)
cam = transform_points(torch.linalg.inv(T_world_cam), track_q)                            # camera j coords
x_hat = project(cam, K)                                                                   # (T, N, 2)
err0 = (x_hat[0] - queries.to(x_hat)).norm(dim=-1).median()
print(f"pair (0, 0): its track map reprojects {float(err0):.2f} px (median) from its own pixels")
assert torch.isfinite(x_hat).any(), "some tracked points must be in front of their camera"

# %% [markdown]
# ## 3. The baseline losses (released St4RTrack)
#
# - $L_{traj} = \sqrt{\operatorname{mean}_{(j,n)} \lVert \hat x_{j,n} - \tilde x_{j,n}\rVert^2}$ over the labels
#   the provider marks valid (pixel RMSE, weight 0.5);
# - $L_{depth} = \operatorname{mean}_j \operatorname{mean}_p (s_j \tilde d_j - \hat z_j)^2$, with
#   $\hat z_j = z^{rec}_j / \overline{z^{rec}_j}$ the recon depth seen from camera j and
#   $s_j = \sum \tilde d \hat z / \sum \tilde d^2$ the least-squares scale (weight 10);
# - $L_{align} = \operatorname{mean} \lVert \text{track}_j(p_n) - \text{recon}_j(\tilde x_{j,n}) \rVert / \bar s$,
#   recon read at the *tracked* pixel, $\bar s$ = the anchor's mean distance (weight 5).
#
# The normalisations make every term independent of the scene's scale: the network cannot lower a loss by
# shrinking the world.

# %%
sim = labels["sim"]
used = sim.track_valid & (cam[..., 2] > 0)
with torch.no_grad():
    l_traj = losses.traj_loss(x_hat, sim.tracks_2d, used)
    depth_recon = transform_points(torch.linalg.inv(T_world_cam), out.recon)[..., 2]
    l_depth = losses.depth_loss(depth_recon, sim.depth)
    recon_at_tilde = occlusion.sample_map(out.recon, sim.tracks_2d)
    l_align = losses.align_loss(track_q, recon_at_tilde, used, track_q[0].norm(dim=-1).mean())
print(f"L_traj = {l_traj:.2f} px, L_depth = {l_depth:.4f}, L_align = {l_align:.3f}")
assert torch.isclose(losses.depth_loss(3.0 * depth_recon, sim.depth), l_depth, rtol=1e-4), "scale-invariant"
terms = losses.adaptation_losses(out, K, T_world_cam, sim, cfg)
assert torch.isclose(terms.traj, l_traj) and torch.isclose(terms.align, l_align)

# %% [markdown]
# ## 4. The occlusion mask (the course's proposal, part 1)
#
# Reproject the tracked point into frame j and compare its depth with the depth of what frame j's
# reconstruction shows at that pixel:
#
# $$m_{j,n} = \mathbb 1\big[\, z^{trk}_{j,n} \le z^{rec}_j(\hat x_{j,n}) + \tau\, z^{rec}_j(\hat x_{j,n}) \big],
#   \qquad m_{j,n} = 0 \text{ if } \hat x_{j,n} \text{ leaves the image},$$
#
# computed without gradient. First on **exact** pointmaps and cameras (ground truth): the test itself is right,
# then on the network's pointmaps: the mask is only as good as the pointmaps it is computed from.

# %%
gt_track = vid.gt.lookup(queries)[1]                                          # (T, N, 3) world
gt_cam = transform_points(torch.linalg.inv(vid.gt.T_world_cam), gt_track)
mask_exact = occlusion.occlusion_mask(gt_cam[..., 2], project(gt_cam, vid.gt.K), vid.gt.depth, tau=0.05)
q_exact = occlusion.mask_quality(mask_exact, gt_vis)
mask_pred = occlusion.occlusion_mask(cam[..., 2], x_hat, depth_recon, tau=cfg.tau)
q_pred = occlusion.mask_quality(mask_pred, gt_vis)
q_valid = occlusion.mask_quality(sim.track_valid, gt_vis)
for name, q in (("mask, exact geometry", q_exact), ("mask, network", q_pred), ("tracker's own flag", q_valid)):
    print(f"{name:>22}: visible precision {q['visible_precision']:.2f}  recall {q['visible_recall']:.2f}  "
          f"occluded recall {q['occluded_recall']:.2f}")
assert q_exact["visible_precision"] > 0.9 and q_exact["visible_recall"] > 0.9, "exact geometry: the test matches"

# %% [markdown]
# Ground truth against the network's mask, in the anchor image (each query pixel p_n), for three frames:
# green = both say visible, red = the mask keeps a hidden point, blue = the mask drops a visible point.

# %%
fig = make_subplots(2, 3, subplot_titles=[f"GT visibility, frame {j}" for j in show] +
                    [f"mask (network), frame {j}" for j in show], vertical_spacing=0.08, horizontal_spacing=0.02)
anchor = (vid.video[0].permute(1, 2, 0) * 255).round().byte().numpy()
for i, j in enumerate(show):
    for row, m in ((1, gt_vis[j]), (2, mask_pred[j])):
        fig.add_trace(go.Image(z=anchor), row, i + 1)
        kind = (gt_vis[j].long() * 2 + mask_pred[j].long()) if row == 2 else m.long() * 3
        colours = {0: "black", 1: "red", 2: "royalblue", 3: "lime"}
        fig.add_trace(go.Scatter(x=queries[:, 0], y=queries[:, 1], mode="markers", showlegend=False,
                                 marker=dict(size=4, color=[colours[int(k)] for k in kind])), row, i + 1)
fig.update_layout(height=420, margin=dict(l=0, r=0, t=30, b=0))
fig.show()

# %% [markdown]
# ## 5. σ² weighting (the course's proposal, part 2)
#
# The network also predicts log σ² per pixel (a separate zero-initialised head, σ² = 1 at the start). Each
# residual r (pixels for L_traj; for L_align the 3D error in pixel-equivalents f·‖Δ‖/s̄) costs
#
# $$\ell(r, \sigma^2) = \frac{\rho(r)}{\sigma^2} + \log \sigma^2, \qquad \rho(r) = r \text{ (Laplace) or } r^2/2
#   \text{ (Gaussian)},$$
#
# minimised at σ² = ρ(r): a point the network cannot fit gets a large σ², so its residual weighs 1/σ², and
# log σ² charges for every unit of doubt. Below, ℓ over log σ² for three residuals (Laplace ρ(r) = r), each
# shifted by its minimum value so that all three fit one axis: each minimum sits on its dot at log σ² = log ρ(r),
# so a larger residual gets a larger σ². The robust losses use **both**: only m = 1 entries, each weighted by its σ².

# %%
log_s2 = torch.linspace(-3, 5, 81)
fig = go.Figure()
for r, color in zip((0.5, 3.0, 20.0), ("#1f77b4", "#ff7f0e", "#2ca02c")):
    rho = occlusion.robust_penalty(torch.tensor(r), "laplace")
    loss = rho * torch.exp(-log_s2) + log_s2
    best = float(log_s2[loss.argmin()])
    assert abs(best - math.log(r)) < 0.11, (r, best)
    fig.add_trace(go.Scatter(x=log_s2, y=loss - loss.min(), name=f"r = {r} px",
                             line=dict(color=color), legendgroup=str(r)))
    fig.add_trace(go.Scatter(x=[math.log(float(rho))], y=[0.0], mode="markers", marker=dict(color=color, size=10),
                             legendgroup=str(r), showlegend=False, hovertext=f"log ρ({r}) = {math.log(float(rho)):.2f}"))
fig.update_layout(height=300, xaxis_title="log σ²", yaxis_title="ℓ − min ℓ", yaxis_range=[-0.2, 5],
                  margin=dict(t=10, b=40))
fig.show()

# %% [markdown]
# ## 6. A short adaptation: baseline against the proposal
#
# `loop.adapt_video` adapts a copy of the model (by default everything but the encoder, which stays frozen; the
# paper adapts only the tracking branch: `params="track"`) for a few steps with the simulated pseudo-labels; it
# never sees the ground truth. The package's default drops L_traj (`w_traj = 0`; the released weight is 0.5):
# see the sensitivity table below for why. After the steps it **re-anchors** the tracks (`adapt.reanchor`, on by
# default, `reanchor=False` turns it off): every anchor point moves along its ray to the mono-depth's distance
# (one median scale for the video), and every frame's track moves with it, so the network's own motion is kept:
#
#     X_0'(p) = track_0(p) · s d̃_0(p) / z_0(p),   s = median_p z_0(p) / d̃_0(p),   track_j' = track_j + X_0' − track_0
#
# The row "baseline, steps only" is the same run without it. `eval.adaptation.adapt_and_score` runs it and then scores the tracks in the world frame (APD in %, EPE in m after median scaling, [docs/method.md §7](../docs/method.md#s7)). Each step uses pair (0, 0)
# and 7 other random pairs. Quick mode runs 3 steps: it shows the mechanics, not the effect. `data/adapt_variants_quick.json` holds the
# recorded comparison of every variant on 3 wild clips (below).

# %%
steps = 3 if QUICK else 15        # 15 steps, lr 3e-5, 8 pairs per step: AdaptConfig's defaults
configs = {"none": AdaptConfig(variant="none"),
           "baseline, steps only": AdaptConfig(variant="baseline", steps=steps, reanchor=False),
           "baseline": AdaptConfig(variant="baseline", steps=steps),
           "robust": AdaptConfig(variant="robust", steps=steps)}
results = {name: adapt_and_score(model, vid, sim, cfg) for name, cfg in configs.items()}
rows = []
for v, res in results.items():
    m = res.metrics["tracking"]["median"]
    rows.append([v, f"{m['apd']:.1f}", f"{m['apd_dynamic']:.1f}", f"{m['epe']:.3f}", f"{m['epe_dynamic']:.3f}",
                 f"{res.metrics['mask']['visible_precision']:.2f}", f"{res.metrics['mask']['visible_recall']:.2f}",
                 f"{res.seconds:.1f}"])
    assert all(math.isfinite(rec["total"]) for rec in res.loss_log)
header = ["variant", "APD", "APD dyn", "EPE", "EPE dyn", "mask vis. P", "mask vis. R", "s"]
fig = go.Figure(go.Table(header=dict(values=header), cells=dict(values=list(zip(*rows)))))
fig.update_layout(height=175, margin=dict(l=0, r=0, t=0, b=0))
fig.show()
fig = make_subplots(1, 2, subplot_titles=["L_traj (baseline: px RMSE; robust: σ²-NLL)", "fraction of labels used"])
for v, color in (("baseline", "#1f77b4"), ("robust", "#d62728")):   # one colour per variant in both panels
    log = results[v].loss_log
    fig.add_trace(go.Scatter(y=[r["traj"] for r in log], name=v, line=dict(color=color), legendgroup=v), 1, 1)
    fig.add_trace(go.Scatter(y=[r["used"] for r in log], name=v, line=dict(color=color), legendgroup=v,
                             showlegend=False), 1, 2)
fig.update_layout(height=260, margin=dict(t=30, b=20))
fig.show()

# %% [markdown]
# ## 7. The recorded comparison
#
# Every variant, 3 wild clips, from the shipped checkpoint, with the ablation's reference tracker `sim-latch` (under
# occlusion it follows the occluder and keeps reporting the point visible, as real trackers do), the default
# recipe with re-anchoring; the exact command is in the file.

# %%
recorded = repo_data_dir() / "adapt_variants_quick.json"
if recorded.is_file():
    doc = adapt_compare.read_recorded(recorded)       # files recorded with older key names read the same
    print("command:", doc["settings"].get("command", "?"), "| checkpoint:",
          Path(str(doc["settings"].get("checkpoint", "?"))).name)   # the file's name, not a machine's path
    print(doc["table"])
    print("\nocclusion mask of the unadapted model vs ground-truth visibility (mean over the clips):")
    for label, q in doc.get("mask_tau_sweep", {}).items():
        print(f"  {label:<24} visible precision {q['visible_precision']:.2f}  recall {q['visible_recall']:.2f}  "
              f"occluded recall {q['occluded_recall']:.2f}  kept {q['kept_fraction']:.2f}")
else:
    print("data/adapt_variants_quick.json is not there yet; run python -m st4r_lite.studies.adapt_compare")
sens = repo_data_dir() / "adapt_sensitivity_quick.json"
if sens.is_file():
    doc = adapt_compare.read_recorded(sens)
    print("\nsensitivity of the recipe (APD %, median):", doc["settings"]["command"])
    for name, row in doc["sensitivity"].items():
        print(f"  {name:<30}" + "  ".join(f"{v} {m['apd_median']:.1f} (moving {m['apd_dynamic_median']:.1f})"
                                         for v, m in row["mean"].items()))

# %% [markdown]
# **What the recorded runs show, and why.** (Numbers: `data/adapt_variants_quick.json` and
# `data/adapt_sensitivity_quick.json`, printed above; the checkpoint is named in each file.)
#
# - **What limits the tracks is the anchor's geometry, not the motion.** `python -m st4r_lite.studies.adapt_ceiling`
#   (`data/adapt_ceiling.json`, 12 wild clips) makes one part true at a time: the true motion on the model's own
#   frame 0 adds about 3.5 APD points, the true anchor depth under the model's own motion about 19, and re-anchoring
#   on the mono-depth pseudo-label (no ground truth) about 14.
# - **The gain is mostly re-anchoring's.** With it the default recipe gains about +13 APD on those 12 clips (interval
#   above zero); the same 15 steps without it about +2.4. On the three clips of the tables above (the model's best)
#   the median-aligned APD on all points falls a little (−1.7, within noise) while moving points, EPE and the similarity-aligned APD
#   improve a lot ("steps only" against the others in the sensitivity table). On a clip made harder on purpose
#   (objects 1.6× their size, `adapt_curve --shift size_scale=1.6`) it gains on every clip, about +20 on average.
# - **L_traj is the loss change that hurts most**: it reprojects the tracks through cameras solved by PnP from the
#   model's own recon maps, and pushes the cameras' error into the tracks ("with L_traj 0.5"). Even through the
#   *true* cameras it cannot fix depth: a reprojection constrains 2 of 3 coordinates.
# - **L_align imports the reconstruction's error**: it pulls track_j(p) onto recon_j(x̃_j), and the recon's
#   placement in the world is this model's weakest output. `python -m st4r_lite.studies.adapt_curve` shows the
#   consequence: the longer the adaptation, the lower the APD, while the losses keep falling, so no stopping rule
#   built on these losses can work.
# - **The mask is only as good as the pointmaps.** On exact geometry the occlusion test is almost perfect (the
#   "exact geometry" line above); on the network's pointmaps its precision is what the sweep shows. τ only trades
#   visible recall for occluded recall; it cannot create precision.
# - **What the tracker does under occlusion decides whether a mask can matter**: a tracker that flags most occluded
#   points itself (the default simulated one) leaves the mask little to remove; one that latches onto the occluder
#   and keeps saying "visible" (`sim-latch`, the ablation's reference) does not.

# %% [markdown]
# ## Exercise
# 1. Sweep τ ∈ {0.02, 0.1, 0.3, 1.0} for the mask computed from the **network's** pointmaps and from **exact**
#    geometry. Which of visible precision / recall moves with τ, and why does the network's visible precision stay
#    near the share of visible entries?
# 2. The σ² loss is ρ(r)/σ² + log σ². Minimise it over σ² by hand for a fixed residual r (Laplace ρ(r) = r).
#    What does the optimum say about what the σ² head learns, and why can a point not "cheat" with σ² → ∞?
#
# <details><summary>Solution (for the teacher to reveal)</summary>
#
# ```python
# for tau in (0.02, 0.1, 0.3, 1.0):
#     qp = occlusion.mask_quality(occlusion.occlusion_mask(cam[..., 2], x_hat, depth_recon, tau=tau), gt_vis)
#     qe = occlusion.mask_quality(occlusion.occlusion_mask(gt_cam[..., 2], project(gt_cam, vid.gt.K),
#                                                          vid.gt.depth, tau=tau), gt_vis)
#     print(f"tau {tau}: network visible P {qp['visible_precision']:.2f} R {qp['visible_recall']:.2f} | "
#           f"exact P {qe['visible_precision']:.2f} R {qe['visible_recall']:.2f}")
# ```
# A larger τ accepts more points, so visible recall rises; visible precision only improves if the depths can tell "behind a
# surface" from "wrong depth". The tiny network's depths are off by about as much as objects are thick, so its
# mask is close to a coin flip weighted by the visible share. 2: d/dσ² (r/σ² + log σ²) = −r/σ⁴ + 1/σ² = 0 gives
# σ² = r: the head learns to predict its own error. σ² → ∞ is punished by the log σ² term.
# </details>
