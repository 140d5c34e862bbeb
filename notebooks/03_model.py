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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/st4r-lite/st4r_lite/blob/main/notebooks/03_model.ipynb)
#
# # 03 · The network: DUSt3R's architecture, read the St4RTrack way
#
# **Goals.** After this notebook you can
# 1. follow one image pair through the network with the tensor shape at every step: patch embedding,
#    RoPE2D, the Siamese encoder, the two cross-attending decoders, the heads and their output activations;
# 2. say what each branch learns in St4RTrack: head 1 → **track** ¹X¹_j, head 2 → **recon** ¹Xʲ_j;
# 3. compare the presets (`tiny`, `small`, `full`) by size and cost, and know why `full` loads the released
#    DUSt3R / MonST3R / St4RTrack checkpoints key for key;
# 4. check that our code computes *the same function* as the reference implementation (parity).
#
# **Time.** Quick mode (CPU): about 30 s. Full mode (GPU): about a minute, plus a 2.3 GB download if you
# choose to load released weights.
#
# St4RTrack adds **no new module** to DUSt3R: it keeps the network and changes what the two outputs mean
# (and how they are supervised, notebook 04). Our only addition is a tiny per-pixel log σ² head per branch,
# zero-initialised, used by the robust adaptation losses of notebook 06.

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

import plotly.graph_objects as go
import torch
from einops import rearrange

from st4r_lite.app import views
from st4r_lite.model.blocks import RoPE2D, patch_positions
from st4r_lite.model.config import PRESETS
from st4r_lite.model.heads import pointmap_activation
from st4r_lite.model.network import build_model, count_parameters
from st4r_lite.model.pairs import predict_video
from st4r_lite.runtime import pick_device, quick_mode

QUICK = quick_mode()
device = pick_device()
views.use_notebook_renderer()   # figures show in JupyterLab, Colab and exported HTML
print(f"quick mode: {QUICK}, device: {device}")

# %% [markdown]
# ## 1. One pair in, two pointmaps out
#
# Input: a pair (anchor frame 0, frame j), both `(B, 3, H, W)` in [-1, 1]. Output, all in the **anchor
# camera's frame** (= the world):
#
# | branch | head | St4RTrack name | meaning |
# |---|---|---|---|
# | 1 (anchor tokens) | `downstream_head1` | `track` = ¹X¹_j | where every **anchor pixel** is at **time j** |
# | 2 (frame-j tokens) | `downstream_head2` | `recon` = ¹Xʲ_j | frame j's visible geometry at time j |
#
# DUSt3R trained head 1 to give the anchor's own points at the anchor's time (¹X¹_1) and MonST3R kept that;
# St4RTrack re-trains head 1 so that its points *move with time j*: a dense 3D track of every anchor pixel.
# Each head also gives a confidence C > 1 per pixel.
#
# We walk through the `tiny` preset (runs anywhere). Its sizes:

# %%
model = build_model("tiny").eval()
cfg = model.config
print(cfg)
B, (H, W) = 2, cfg.img_size
p = cfg.patch_size
g = torch.Generator().manual_seed(0)
img_anchor = torch.rand(B, 3, H, W, generator=g) * 2 - 1
img_other = torch.rand(B, 3, H, W, generator=g) * 2 - 1
print("images:", tuple(img_anchor.shape), "in [-1, 1]")

# %% [markdown]
# ## 2. Patch embedding: pixels → tokens
#
# A `p × p` convolution with stride `p` turns each patch into one `C_enc`-dimensional token:
# `(B, 3, H, W) → (B, C_enc, H/p, W/p) → (B, N, C_enc)` with `N = (H/p)(W/p)`, in row-major order. There is
# **no absolute position table**: position enters only through RoPE inside attention, so any `H, W` that are
# multiples of `p` work (landscape or portrait).

# %%
tokens, pos = model.patch_embed(img_anchor)
h, w = H // p, W // p
print(f"tokens {tuple(tokens.shape)}  = (B, N = {h}*{w}, C_enc = {cfg.enc_dim})")
print(f"positions {tuple(pos.shape)} (row y, column x); first five: {pos[0, :5].tolist()}")
assert tokens.shape == (B, h * w, cfg.enc_dim)
assert torch.equal(pos[0, w], torch.tensor([1, 0])), "token w is the first of the second row"

# %% [markdown]
# ## 3. RoPE2D: relative positions inside attention
#
# Each attention head's `dh` channels are split in two halves: the first rotated by the token's row `y`, the
# second by its column `x`. Inside a half of width `d`, channel pair `(i, i + d/2)` turns by the angle
# `pos · θ_i`, with `θ_i = 100^(-2i/d)` (base 100, not the 10000 of text models: image grids are short):
#
# `x' = x cos(pos θ) + rotate_half(x) sin(pos θ)`, `rotate_half([x₁, x₂]) = [-x₂, x₁]`.
#
# Because rotations compose, the attention score `q'·k'` depends only on the **difference** of positions:
# moving both tokens by the same offset changes nothing. We check it numerically.

# %%
rope = RoPE2D(cfg.rope_base)
q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)


def score(pq, pk):
    """q'·k' for a query at pq = (y, x) and a key at pk."""
    return float((rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum())


print(f"score((2,3),(5,1)) = {score((2, 3), (5, 1)):.5f};  both shifted by (4,6): {score((6, 9), (9, 7)):.5f}")
assert abs(score((2, 3), (5, 1)) - score((6, 9), (9, 7))) < 1e-4
assert abs(score((2, 3), (5, 1)) - score((2, 3), (5, 2))) > 1e-4, "another offset gives another score"

# %% [markdown]
# The score of one query against keys at every offset on the grid: a smooth, position-dependent pattern the
# network can use to know "where" without any position table. Drag the slider to change the frequency base
# (100 is DUSt3R's).

# %%
grid = patch_positions(1, 15, 15)  # keys on a 15 x 15 grid, query at the centre
qc = torch.ones(1, 1, 1, 32)
frames, bases = [], [10.0, 100.0, 1000.0]
for base in bases:
    r = RoPE2D(base)
    s = (r(qc, torch.tensor([[[7, 7]]])) * r(qc.expand(1, 1, 225, 32), grid)).sum(-1)[0, 0]
    frames.append(go.Frame(data=[go.Heatmap(z=s.reshape(15, 15).numpy(), colorscale="RdBu", zmid=0)],
                           name=f"{base:g}"))
fig = go.Figure(data=frames[1].data, frames=frames)
fig.update_layout(
    title="RoPE2D score q'·k' of the centre query vs key position (y down, x right)", width=520, height=500,
    yaxis=dict(autorange="reversed", title="key row y"), xaxis=dict(title="key column x"),
    sliders=[dict(active=1, currentvalue=dict(prefix="base = "),
                  steps=[dict(label=f.name, method="animate",
                              args=[[f.name], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
                         for f in frames])])
fig.show()

# %% [markdown]
# ## 4. The Siamese encoder
#
# Both images go through the **same** ViT encoder in one batch of `2B` images: `enc_depth` pre-norm blocks
# (`x += Attn(LN(x)); x += MLP(LN(x))`), then a final LayerNorm. Shapes stay `(2B, N, C_enc)`.

# %%
with torch.no_grad():
    enc, pos2 = model.encode(torch.cat([img_anchor, img_other]))
enc1, enc2 = enc[:B], enc[B:]
print(f"encoder: {cfg.enc_depth} blocks of width {cfg.enc_dim} ({cfg.enc_heads} heads of {cfg.enc_dim // cfg.enc_heads})")
print("enc1 (anchor):", tuple(enc1.shape), " enc2 (frame j):", tuple(enc2.shape))
# Siamese: encoding the anchor alone gives the same tokens (weights shared, no cross-talk in the encoder).
assert torch.allclose(model.encode(img_anchor)[0], enc1, atol=1e-5)

# %% [markdown]
# ## 5. Two decoders that talk to each other
#
# `decoder_embed` (shared) maps `C_enc → C_dec`. Then two stacks of `dec_depth` blocks, one per branch,
# are updated **simultaneously**: block l of branch 1 reads its own tokens and branch 2's tokens of layer
# l-1, and vice versa:
#
# `x += SelfAttn(LN₁(x));  y' = LN_y(y);  x += CrossAttn(LN₂(x), y', y');  x += MLP(LN₃(x))`
#
# Cross-attention is where the two views meet: the anchor's tokens look up where their content went in
# frame j. The decoder output is the list `[encoder tokens, block 1, …, block L]` (the last one after
# `dec_norm`); the heads read that list.

# %%
with torch.no_grad():
    dec1, dec2 = model.decode(enc1, pos2[:B], enc2, pos2[B:])
print(f"decoder lists: {len(dec1)} entries = [enc, block 1..{cfg.dec_depth}]")
for i, (a, b) in enumerate(zip(dec1, dec2)):
    print(f"  [{i}] branch 1 {tuple(a.shape)}   branch 2 {tuple(b.shape)}")
assert len(dec1) == cfg.dec_depth + 1 and dec1[-1].shape == (B, h * w, cfg.dec_dim)
# Cross-talk: changing only frame j changes branch 1's (anchor) tokens after the first decoder block.
with torch.no_grad():
    d1_other, _ = model.decode(enc1, pos2[:B], enc2.flip(0), pos2[B:])
assert torch.equal(d1_other[0], dec1[0]) and not torch.allclose(d1_other[1], dec1[1])

# %% [markdown]
# ## 6. Heads and output activations
#
# A **linear head** (`tiny`) maps each last-layer token to `4·p²` numbers and "pixel-shuffles" them back into
# its `p × p` patch: `(B, N, C_dec) → (B, N, 4p²) → (B, 4, H, W)`. A **DPT head** (`small`, `full`) fuses four
# hooked layers of the list at several scales (section 8). Either way the 4 raw channels `(x, y, z, c)`
# become outputs with DUSt3R's activations (depth mode `exp`, confidence mode `exp` from 1):
#
# `X = xyz / ‖xyz‖ · expm1(‖xyz‖)` — the direction is kept, the distance `e^‖xyz‖ − 1 ≥ 0` can span orders
# of magnitude with small raw values;
#
# `C = 1 + exp(c)` — a confidence always above 1 (the loss `C·err − α log C` then cannot be cheated by C → 0).

# %%
with torch.no_grad():
    raw1 = model.downstream_head1(dec1, (H, W))
    out = model(img_anchor, img_other)
print("raw head-1 output:", tuple(raw1.shape), "= (B, 4, H, W)")
track, conf_track = pointmap_activation(raw1)
xyz, c = rearrange(raw1, "b c h w -> b h w c")[..., :3], raw1[:, 3]
norm = xyz.norm(dim=-1, keepdim=True)
assert torch.allclose(track, xyz / norm * torch.expm1(norm), atol=1e-6)
assert torch.allclose(conf_track, 1 + torch.exp(c)) and (conf_track > 1).all()
assert torch.allclose(out.track, track, atol=1e-5)
print("track", tuple(out.track.shape), " recon", tuple(out.recon.shape), " conf", tuple(out.conf_track.shape))
print("log sigma^2 at initialisation (zero-initialised heads):", float(out.log_sigma2_track.abs().max()))
assert float(out.log_sigma2_track.abs().max()) == 0.0

# %% [markdown]
# ## 7. A whole video: pairs (0, t)
#
# For a video `(T, 3, H, W)`, St4RTrack runs every pair (anchor 0, t). `predict_video` encodes the anchor
# once and the other frames `chunk` at a time, so memory depends on `chunk`, not on `T`. Row t of `track`
# is then the 3D position of every anchor pixel at time t: dense 3D tracks in the world frame.

# %%
video = torch.rand(6, 3, H, W, generator=g) * 2 - 1
with torch.no_grad():
    pv = predict_video(model, video, chunk=4)
    one_batch = model(video[:1].expand(6, -1, -1, -1), video)
print("track over the video:", tuple(pv.track.shape), "= (T, H, W, 3)")
assert torch.allclose(pv.track, one_batch.track, rtol=1e-4, atol=1e-5), "chunking must not change the result"

# %% [markdown]
# ## 8. The DPT head of `small` and `full`
#
# DPT reads four entries of the decoder list (hooks `0, L/2, 3L/4, L`; 0, 6, 9, 12 in DUSt3R), reshapes each to
# a token map `(B, C, h, w)`, resamples them to 4×, 2×, 1× and ½× the token grid ("reassemble"), then fuses
# coarse-to-fine with residual conv units and 2× bilinear upsampling, and a small conv head outputs the
# 4 raw channels at full resolution. We record the shapes with forward hooks on `small` (at a reduced input
# size in quick mode).

# %%
small = build_model("small").eval()
hs, ws = (64, 96) if QUICK else small.config.img_size
shapes = []
dpt = small.downstream_head1.dpt
names = {**{f"act_postprocess[{i}]": m for i, m in enumerate(dpt.act_postprocess)},
         **{f"refinenet{i}": getattr(dpt.scratch, f"refinenet{i}") for i in (4, 3, 2, 1)}}
handles = [m.register_forward_hook(lambda mod, inp, o, n=n: shapes.append((n, tuple(o.shape))))
           for n, m in names.items()]
x = torch.zeros(1, 3, hs, ws)
with torch.no_grad():
    small(x, x)
for hd in handles:
    hd.remove()
print(f"small, input {hs}x{ws}, patch {small.config.patch_size}: token grid "
      f"{hs // small.config.patch_size}x{ws // small.config.patch_size}, hooks {small.config.dpt_hooks}")
for n, s in shapes[: len(names)]:  # head 1 only
    print(f"  {n:>18}: {s}")

# %% [markdown]
# ## 9. Presets: size and cost
#
# `full` is DUSt3R's ViT-L encoder (1024 × 24) with two ViT-B decoders (768 × 12) and DPT heads: the layout of
# `DUSt3R_ViTLarge_BaseDecoder_512_dpt`, which MonST3R and St4RTrack reuse. We build it on PyTorch's `meta`
# device (shapes only, no memory) to count its parameters. Timings measured with `st4r-lite bench`
# are in `data/bench_cpu.json`.

# %%
groups = {"encoder": ("patch_embed", "enc_blocks", "enc_norm"),
          "decoder 1 (track)": ("dec_blocks.",), "decoder 2 (recon)": ("dec_blocks2",),
          "shared decoder parts": ("decoder_embed", "dec_norm", "mask_token"),
          "head 1": ("downstream_head1",), "head 2": ("downstream_head2",), "sigma heads": ("sigma_head",)}
counts = {}
for name in ("tiny", "small", "full", "full_linear"):
    m = build_model(name, device="meta")
    per = {grp: sum(t.numel() for k, t in m.named_parameters() if k.startswith(prefixes)) for grp, prefixes in groups.items()}
    counts[name] = per
    c_ = PRESETS[name]
    print(f"{name:>11}: {count_parameters(m) / 1e6:7.1f} M parameters, input {c_.img_size}, patch {c_.patch_size}, "
          f"enc {c_.enc_dim}x{c_.enc_depth}, dec {c_.dec_dim}x{c_.dec_depth}, {c_.head_type} heads")
    assert sum(per.values()) == count_parameters(m)
assert 5.5e8 < sum(counts["full"].values()) < 6e8
fig = go.Figure([go.Bar(name=grp, x=list(counts), y=[counts[n][grp] / 1e6 for n in counts]) for grp in groups])
fig.update_layout(barmode="stack", yaxis=dict(title="million parameters", type="log"), width=700, height=420,
                  title="Where the parameters are (log scale)")
fig.show()

# %% [markdown]
# ## 10. Parity with the reference implementation (when the fixture is available)
#
# The course's shared folder holds outputs of the reference DUSt3R code for two small random networks
# (linear and DPT heads) on three input shapes. If it sits beside the repository we load those weights and
# compare every intermediate tensor; the maximum difference should be about 1e-5 (float32 rounding).

# %%
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import st4r_lite  # noqa: E402
from st4r_lite.model.checkpoint import load_weights  # noqa: E402
from st4r_lite.model.config import ModelConfig  # noqa: E402
from st4r_lite.model.network import St4RTrack  # noqa: E402

fixture = Path(st4r_lite.__file__).resolve().parents[2] / "shared" / "fixtures" / "dust3r_parity"
if not fixture.is_dir():
    print(f"parity fixture not found at {fixture}: skipping this section (it ships with the course files only)")
else:
    for kind in ("linear", "dpt"):
        ref_model = St4RTrack(ModelConfig.from_dust3r(json.loads((fixture / kind / "config.json").read_text())))
        report = load_weights(ref_model.eval(), fixture / kind / "state_dict.pt")
        for case, c in torch.load(fixture / kind / "cases.pt", weights_only=True).items():
            with torch.no_grad():
                dbg = ref_model.forward_debug(c["img1"], c["img2"])
            errs = {"enc": (dbg.enc1 - c["enc1"]).abs().max(),
                    "dec": max((a - b).abs().max() for a, b in zip(dbg.dec1 + dbg.dec2, c["dec1"] + c["dec2"])),
                    "track": (dbg.output.track - c["pts3d_1"]).abs().max(),
                    "recon": (dbg.output.recon - c["pts3d_2"]).abs().max()}
            print(f"{kind:>6} {case:>16}: " + ", ".join(f"{k} {float(v):.1e}" for k, v in errs.items()))
            assert max(float(v) for v in errs.values()) < 1e-4

# %% [markdown]
# ## 11. Released weights (optional, online, non-commercial)
#
# `st4r_lite.model.pretrained.load_pretrained(name)` loads `st4rtrack_seq`, `st4rtrack_pair`, `monst3r` or `dust3r`
# into the `full` preset (2.3 GB each, from Hugging Face, cached under `$ST4R_CACHE` or `~/.cache/st4r_lite`).
# **Licence: CC BY-NC-SA 4.0, non-commercial use only** (DUSt3R's licence, inherited by MonST3R and St4RTrack).
# The released files lack our σ² heads; they start at zero (σ² = 1). In quick mode, on a CPU, or offline,
# this cell only tells you what it would do; a file you placed in the cache by hand is always used.

# %%
from st4r_lite.model import pretrained  # noqa: E402

NAME = "st4rtrack_seq"
cached = pretrained.find_cached(NAME)
want_download = not QUICK and device.type == "cuda" and not pretrained.offline()
if cached is None and not want_download:
    spec = pretrained.PRETRAINED[NAME]
    print(f"skipping the released weights: not cached, and downloading is off here (quick mode, CPU or offline).\n"
          f"To use them, download {pretrained.file_url(spec)} into {pretrained.cache_root() / NAME / spec.filename}")
else:
    try:
        full = pretrained.load_pretrained(NAME, device=device).eval()
        print(full.load_report.summary())
        Hf, Wf = full.config.img_size
        with torch.no_grad():
            o = full(torch.zeros(1, 3, Hf, Wf, device=device), torch.zeros(1, 3, Hf, Wf, device=device))
        print("released St4RTrack output:", tuple(o.track.shape), "median confidence", float(o.conf_track.median()))
    except RuntimeError as err:  # no network after all
        print(f"could not load the released weights: {err}")

# %% [markdown]
# ## Summary
#
# - Pixels → patch tokens (no position table) → shared encoder with RoPE2D (relative positions) →
#   two decoders exchanging information by cross-attention → two heads with `X = xyz/‖xyz‖·expm1(‖xyz‖)`,
#   `C = 1 + exp(c)`, plus our zero-initialised log σ² heads.
# - Same network as DUSt3R/MonST3R; St4RTrack changes the *meaning* of head 1 (track ¹X¹_j, moving with time j)
#   and keeps head 2 as reconstruction (¹Xʲ_j). Notebook 04 trains `tiny` to do exactly that.

# %% [markdown]
# ## Exercise
# 1. Where do the `tiny` preset's parameters live? Count them for the encoder (`patch_embed`, `enc_blocks`,
#    `enc_norm`), decoder 1 (`dec_blocks`), decoder 2 (`dec_blocks2`) and the two heads. Which part does test-time
#    adaptation change by default (notebook 06), and what fraction of the network is that?
# 2. Feed the same image as anchor and as frame j. Which physical statement says ¹X¹_0 and ¹X⁰_0 should then
#    agree, and do they for an untrained network? Why not?
#
# <details><summary>Solution (for the teacher to reveal)</summary>
#
# ```python
# from st4r_lite.model.network import build_model
# m = build_model("tiny")
# groups = {"encoder": ("patch_embed", "enc_blocks", "enc_norm"), "decoder 1": ("dec_blocks.",),
#           "decoder 2": ("dec_blocks2.",), "heads": ("downstream_head", "sigma_head")}
# total = sum(p.numel() for p in m.parameters())
# for name, prefixes in groups.items():
#     n = sum(p.numel() for k, p in m.named_parameters() if k.startswith(prefixes))
#     print(f"{name:>10}: {n / 1e6:.2f} M ({n / total:.0%})")
# ```
# Adaptation changes decoder 1 + head 1 + σ-head 1 (`model.branch_parameters("track")`), roughly a third of
# `tiny`. For (I, I) both pointmaps describe the anchor frame at time 0, so they must agree; an untrained network
# has no reason to produce the same output from its two different decoders and heads.
# </details>
