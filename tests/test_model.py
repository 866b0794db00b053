"""The denoiser is E(3)-equivariant in coordinates, invariant in features, permutation-equivariant."""

import pytest
import torch

from conftest import random_rotation
from ead.data.batch import full_edges, molecule_index, remove_mean
from ead.model.egnn import Denoiser

TOL = 1e-9  # float64; the same checks pass at ~1e-4 in float32


def _inputs(sizes=(5, 9, 3), features=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(sizes)
    mol = molecule_index(n)
    x = remove_mean(torch.randn(len(mol), 3, generator=g, dtype=torch.float64) * 1.5, mol, len(n))
    h = torch.randn(len(mol), features, generator=g, dtype=torch.float64)
    t = torch.rand(len(mol), generator=g, dtype=torch.float64)   # per-atom times
    return x, h, t, mol, n, full_edges(n)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = Denoiser(6, 0, hidden=32, layers=3).double().eval()
    # give the coordinate head real weight so that equivariance is not trivially satisfied
    for blk in m.egnn.blocks:
        torch.nn.init.normal_(blk.coord_out.weight, std=0.3)
    return m


@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_reflection_translation(net, reflect):
    x, h, t, mol, n, e = _inputs()
    R = random_rotation(1, reflect)
    ex, eh = net(x, h, t, mol, len(n), e)
    assert ex.abs().max() > 1e-3  # the coordinate output is not trivially zero
    shift = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64)
    ex2, eh2 = net(x @ R.T + shift, h, t, mol, len(n), e)
    assert torch.allclose(ex2, ex @ R.T, atol=TOL)
    assert torch.allclose(eh2, eh, atol=TOL)


def test_permutation(net):
    x, h, t, mol, n, e = _inputs()
    perm = torch.cat([torch.randperm(5), 5 + torch.randperm(9), 14 + torch.randperm(3)])
    ex, eh = net(x, h, t, mol, len(n), e)
    ex2, eh2 = net(x[perm], h[perm], t[perm], mol, len(n), e)
    assert torch.allclose(ex2, ex[perm], atol=TOL)
    assert torch.allclose(eh2, eh[perm], atol=TOL)


def test_molecules_in_a_batch_do_not_interact(net):
    x, h, t, mol, n, e = _inputs()
    ex, eh = net(x, h, t, mol, len(n), e)
    one = slice(5, 14)
    n1 = torch.tensor([9])
    ex1, eh1 = net(x[one], h[one], t[one], molecule_index(n1), 1, full_edges(n1))
    assert torch.allclose(ex1, ex[one], atol=TOL) and torch.allclose(eh1, eh[one], atol=TOL)


def test_output_zero_com_and_time_is_used(net):
    x, h, t, mol, n, e = _inputs()
    ex, eh = net(x, h, t, mol, len(n), e)
    com = torch.zeros(len(n), 3, dtype=ex.dtype).index_add_(0, mol, ex)
    assert com.abs().max() < TOL
    ex2, _ = net(x, h, torch.roll(t, 1), mol, len(n), e)   # other per-atom times, other output
    assert (ex2 - ex).abs().max() > 1e-6


def test_fused_edge_projection_equals_concatenation(net):
    x, h, t, mol, n, e = _inputs()
    a = net(x, h, t, mol, len(n), e, fused=True)
    b = net(x, h, t, mol, len(n), e, fused=False)
    assert torch.allclose(a[0], b[0], atol=1e-10) and torch.allclose(a[1], b[1], atol=1e-10)


def test_paper_preset_size():
    from ead.model.config import PRESETS

    layers, hidden = PRESETS["paper"]
    m = Denoiser(6, 0, hidden=hidden, layers=layers)
    assert 5.2e6 < sum(p.numel() for p in m.parameters()) < 5.4e6   # the paper's 5.3 M
