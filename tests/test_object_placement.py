"""The object placement study: a placement error is one number per object, a shape error per pixel."""

import json
import math

import pytest
import torch

from st4r_lite.model.network import build_model
from st4r_lite.studies import object_placement
from st4r_lite.studies.object_placement import object_offsets, summarise
from st4r_lite.world.render import generate_clips


def test_a_moved_object_is_a_placement_error_and_a_bent_one_a_shape_error():
    clips = generate_clips(1, frames=2, height=32, width=48, domain="pretrain", seed=11)
    gt, oid = clips.track_world[0, 0], clips.object_id[0, 0]
    objs, room = object_offsets(gt, gt, oid)
    assert objs and all(abs(o["offset"]) < 1e-9 and o["shape"] < 1e-9 for o in objs)
    assert abs(room["room_slope"] - 1) < 1e-6 and room["room_abs_err"] < 1e-9
    assert all(o["cut"] == bool((oid[-1] == o["object"]).any()) for o in objs)   # stands below the picture
    pred = gt.clone()
    pred[oid == objs[0]["object"]] *= 0.8                          # the first object 20 % too near, along its rays
    moved = {o["object"]: o for o in object_offsets(pred, gt, oid)[0]}[objs[0]["object"]]
    assert abs(moved["offset"] - float(torch.log(torch.tensor(0.8)))) < 1e-6 and moved["shape"] < 1e-6
    bent = gt.clone()
    bent[..., 2] *= torch.exp(0.1 * torch.randn(bent.shape[:2], generator=torch.Generator().manual_seed(0)))
    noisy = {o["object"]: o for o in object_offsets(bent, gt, oid)[0]}[objs[0]["object"]]
    assert noisy["shape"] > 0.02 and abs(noisy["offset"]) < noisy["shape"] + 0.05
    s = summarise([{"offset": 0.1, "room": 0.1, "shape": 0.02}, {"offset": -0.05, "room": 0.0, "shape": 0.04},
                   {"offset": 0.2, "room": 0.1, "shape": 0.03}])
    assert s["objects"] == 3 and s["too_far"] == 0.667 and s["offset_abs_median"] == 0.1 and s["shape_median"] == 0.03


def test_objects_pulled_toward_the_rooms_depth_show_as_shrink_inside_and_out():
    clips = generate_clips(4, frames=2, height=64, width=96, domain="pretrain", seed=21)
    objs = []
    for b in range(4):
        gt, oid = clips.track_world[b, 0], clips.object_id[b, 0]
        truth = object_offsets(gt, gt, oid)[0]
        assert all(o["near"] < 0 for o in truth)                   # objects stand in front of the room
        pred = gt.clone()
        for o in truth:                                            # 30 % of the way to the room's depth (log)
            pred[oid == o["object"]] *= float(torch.exp(torch.tensor(-0.3 * o["near"])))
        got = object_offsets(pred, gt, oid)[0]
        for o in got:
            assert abs(o["room"] + 0.3 * o["near"]) < 1e-5, o       # the room is exact: its own fit is identity
            assert o["interior"] is None or abs(o["interior"] - o["offset"]) < 1e-5   # no edge effect
        objs += got
    s = summarise(objs)
    assert abs(s["shrink"] + 0.3) < 1e-4 and abs(s["at_room"]) < 1e-4 and s["shrink_ci"][0] <= -0.29
    assert s["interior_objects"] > 0 and s["too_far"] == 1.0
    thirds = object_placement._thirds(sorted(objs, key=lambda o: o["near"]))
    nears = [summarise(t, resamples=0)["near_median"] for t in thirds]
    assert nears[0] < nears[1] < nears[2] < 0
    few = summarise(objs[:4])                                       # too few objects for an interval
    assert few["shrink"] is not None and "shrink_ci" not in few


def test_an_edge_blur_shows_in_the_whole_object_but_not_in_its_interior():
    H = W = 30
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    depth = torch.full((H, W), 4.0, dtype=torch.float64)           # a wall at 4 m
    oid = torch.zeros(H, W, dtype=torch.long)
    oid[10:20, 10:20] = 1                                           # a 10 × 10 object at 2 m in front of it
    depth[oid == 1] = 2.0
    gt = torch.stack([(xs - 15) / 20 * depth, (ys - 15) / 20 * depth, depth], -1)
    pred = gt.clone()
    ring = (oid == 1).clone()
    ring[13:17, 13:17] = False                                      # the outline, 3 px deep, blurred into the wall
    pred[ring] *= 2.0
    o = object_offsets(pred, gt, oid)[0][0]
    assert abs(o["offset"] - math.log(2.0)) < 1e-6  # most of the object sits on the wall
    assert abs(o["interior"]) < 1e-9                                # its 4 × 4 interior is exact
    assert abs(o["near"] - math.log(0.5)) < 1e-9


def test_the_study_writes_its_record_with_the_command(tmp_path, monkeypatch):
    model = build_model("tiny", seed=2)
    path = tmp_path / "m.pt"
    from st4r_lite.model.checkpoint import save_checkpoint
    save_checkpoint(path, model)
    out = tmp_path / "rec.json"
    assert object_placement.main([str(path), "--num-clips", "2", "--overfit-steps", "2", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["command"].startswith("python -m st4r_lite.studies.object_placement")
    track = rec["placement"]["track"]
    assert set(rec["placement"]) == {"track", "recon"} and track["all"]["objects"] > 0
    assert track["contact_seen"]["objects"] + track["contact_cut"]["objects"] == track["all"]["objects"]
    assert len(track["by_near"]) == 3 and sum(t["objects"] for t in track["by_near"]) == track["all"]["objects"]
    assert sum(t["objects"] for t in track["by_near_contact_seen"]) == track["contact_seen"]["objects"]
    assert "--overfit-steps 2" in rec["command"] and [r["step"] for r in rec["overfit"]["curve"]] == [0, 2]
    for head in ("track", "recon"):                      # the confidence the loss lets each head give objects
        r = rec["placement"][head]
        assert r["conf_room_median"] > 1 and r["conf_object_median"] > 1
        assert r["conf_room_over_object"] == pytest.approx(r["conf_room_median"] / r["conf_object_median"], rel=1e-2)


def test_the_placement_measure_reads_the_self_pairs():
    clips = generate_clips(2, frames=2, height=32, width=48, domain="pretrain", seed=12)
    track = clips.track_world.clone()                              # (B, S, H, W, 3), pair (0, 0) first
    track[:, 1] += 5.0                                             # pair (0, 1) is not the anchor: ignored
    m = object_placement.placement_measure(track, clips)
    assert m["objects"] > 0 and abs(m["offset_median"]) < 1e-6 and m["shape_median"] < 1e-6
