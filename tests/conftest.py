import os

import numpy as np
import pytest
import torch

# Keep tests on one thread each: CI has 2 cores and a long run may share them.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def qm9_train():
    from ead.data.qm9 import qm9_split

    return qm9_split("train")


@pytest.fixture(scope="session")
def tiny_config(qm9_train):
    from ead.model.config import ModelConfig

    return ModelConfig.from_preset("micro", size_histogram=qm9_train.size_histogram(), window=3)


def random_rotation(seed=0, reflect=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=dtype))
    return q


def micro_ead(sizes: dict, window: int = 3):
    """An untrained micro EAD model with the size distribution `sizes`, the same for every call."""
    from ead.model.config import ModelConfig
    from ead.pipeline import EAD

    torch.manual_seed(0)
    return EAD(ModelConfig.from_preset("micro", size_histogram=sizes, window=window), device="cpu")


@pytest.fixture
def busy_machine(monkeypatch):
    """As on a machine whose CPUs other processes keep busy: the thread rule picks fewer threads
    than cores and says so on stderr (on one core there is nothing to say)."""
    from ead import device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    monkeypatch.setattr(device, "busy_cpus", lambda mine: float(len(mine)))
    yield
    torch.set_num_threads(threads)
