"""Data-parallel pretraining: two CPU processes (gloo) launched by torchrun end with identical weights.

The launch is the documented one (`torchrun --nproc_per_node 2 -m st4r_lite.cli pretrain ...`); each rank
prints the sha256 of its weights, which must agree, while the two ranks trained on different clips.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from st4r_lite.train import distributed
from st4r_lite.train.loop import TrainConfig, clip_seed, load_train_checkpoint, weights_digest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_env_is_a_noop(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = distributed.init_distributed("cpu")
    assert not env.enabled and env.is_main and env.world_size == 1
    x = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(x, env) is x
    distributed.barrier(env)      # no-op, no group needed
    distributed.cleanup(env)


def test_bad_env_is_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="inconsistent"):
        distributed.init_distributed("cpu")


def test_ranks_draw_different_clips():
    cfg = TrainConfig(batch=2, frames=2)
    assert clip_seed(cfg, 0, 1) == clip_seed(cfg, 0, 0) + 2
    assert clip_seed(cfg, 4, 0) == clip_seed(cfg, 0, 1) + 2     # next step starts after both ranks' clips


def test_torchrun_two_ranks_identical_weights(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "st4r_lite.cli", "pretrain", "--preset", "tiny", "--steps", "2", "--batch", "1", "--frames", "2",
           "--warmup", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d)/2: .*?weights sha256 ([0-9a-f]{16})", proc.stdout))
    assert set(digests) == {"0", "1"}, proc.stdout
    assert digests["0"] == digests["1"]
    blob = load_train_checkpoint(out)                     # rank 0 saved, with both ranks' clips counted
    assert blob["state"]["step"] == 2 and blob["state"]["clip_counter"] == 4
    from st4r_lite.model.config import ModelConfig
    from st4r_lite.model.network import St4RTrack as Model

    model = Model(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["model"])
    assert weights_digest(model)[:16] == digests["0"]
