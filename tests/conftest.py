"""Shared pytest fixtures: the ../shared folder beside the repository (CI has it; a user's clone may not)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (it sits beside the repository in CI only)")
    return SHARED


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Tests run on CPU; keep them reproducible and light on a 2-core machine.
    torch.manual_seed(0)
    yield
