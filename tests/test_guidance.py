"""Autoguidance: ε = ε_guide + w·(ε_main − ε_guide), two network calls per step, same data only."""

import subprocess
import sys

import pytest
import torch

from ead import EADError
from ead.data.batch import full_edges, molecule_index, remove_mean
from ead.diffusion.guidance import Autoguided
from ead.model.config import ModelConfig
from ead.pipeline import EAD

SIZES = {5: 1, 9: 2, 14: 1}


def _model(seed, preset="micro", **kw):
    torch.manual_seed(seed)
    m = EAD(ModelConfig.from_preset(preset, size_histogram=SIZES, window=9, **kw), device="cpu")
    for blk in m.denoiser.egnn.blocks:   # non-trivial outputs for an untrained net
        torch.nn.init.normal_(blk.coord_out.weight, std=0.05)
    return m


@pytest.fixture(scope="module")
def pair():
    return _model(0), _model(1, "tiny")


def _inputs(num_features):
    n = torch.tensor([5, 9])
    mol = molecule_index(n)
    g = torch.Generator().manual_seed(0)
    z_x = remove_mean(torch.randn(len(mol), 3, generator=g), mol, 2)
    z_h = torch.randn(len(mol), num_features, generator=g)
    t = torch.rand(len(mol), generator=g)
    return z_x, z_h, t, mol, 2, full_edges(n), None


@torch.no_grad()
def test_guided_prediction_is_the_extrapolation(pair):
    main, guide = pair
    args = _inputs(main.config.num_features)
    mx, mh = main.denoiser(*args)
    gx, gh = guide.denoiser(*args)
    for w in (1.0, 2.0, 0.5):
        x, h = Autoguided(main.denoiser, guide.denoiser, w)(*args)
        torch.testing.assert_close(x, gx + w * (mx - gx))
        torch.testing.assert_close(h, gh + w * (mh - gh))
    x, _ = Autoguided(main.denoiser, guide.denoiser, 1.0)(*args)
    torch.testing.assert_close(x, mx)                                 # w = 1: the main model
    x, _ = Autoguided(main.denoiser, guide.denoiser, 3.0)(*args)
    com = torch.zeros(2, 3).index_add_(0, args[3], x)
    assert float(com.abs().max()) < 1e-5                              # still zero-CoM per molecule
    with pytest.raises(EADError):
        Autoguided(main.denoiser, guide.denoiser, 0.0)


def test_guided_sampling_counts_both_calls_and_changes_the_molecules(pair):
    main, guide = pair
    plain, s0 = main.sample_arrays(3, sampler="synchronous", steps=10, seed=0)
    guided, s1 = main.sample_arrays(3, sampler="synchronous", steps=10, seed=0, guide=guide, guidance=2.0)
    assert s1["network_calls"] == 2 * s0["network_calls"] == 2 * 11
    assert s1["guidance"] == 2.0 and "guidance" not in s0
    assert [len(z) for _, z in plain] == [len(z) for _, z in guided]   # same sizes (same seed)
    assert any(not torch.allclose(torch.as_tensor(a), torch.as_tensor(b)) for (a, _), (b, _) in zip(plain, guided))
    same, _ = main.sample_arrays(3, sampler="synchronous", steps=10, seed=0, guide=guide, guidance=2.0)
    assert all((a == b).all() for (a, _), (b, _) in zip(guided, same))  # reproducible


def test_a_guide_of_other_data_is_refused(pair):
    main, _ = pair
    other = _model(2, atom_types=(1, 6, 7, 8))
    with pytest.raises(EADError, match="atom_types"):
        main.guided_by(other, 2.0)


def test_cli_guide_flags(tmp_path, pair):
    main, guide = pair
    main.save_pretrained(tmp_path / "main")
    guide.save_pretrained(tmp_path / "guide")
    out = tmp_path / "g.sdf"
    r = subprocess.run([sys.executable, "-m", "ead", "sample", "--model", str(tmp_path / "main"), "-n", "2",
                        "--steps", "5", "--sampler", "synchronous", "--guide", str(tmp_path / "guide"),
                        "--guidance", "1.5", "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "<ead_guidance>\n1.5" in text and f"<ead_guide>\n{tmp_path / 'guide'}" in text
    r = subprocess.run([sys.executable, "-m", "ead", "sample", "--model", str(tmp_path / "main"), "-n", "2",
                        "--guidance", "2", "-o", str(tmp_path / "x.sdf")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "--guide" in r.stderr


def test_a_conditional_model_takes_an_unconditional_guide(pair):
    """Classifier-free guidance with the unconditional model apart: the guide ignores the context,
    w = 1 is the conditional model alone, and a guide conditioned on something else is refused."""
    _, guide = pair
    cond = _model(3, context=("alpha",), context_mean=(75.0,), context_mad=(6.0,))
    plain, _ = cond.sample_arrays(3, sampler="synchronous", steps=10, seed=0, num_atoms=[5, 9, 14],
                                  condition={"alpha": 80.0})
    same, s1 = cond.sample_arrays(3, sampler="synchronous", steps=10, seed=0, num_atoms=[5, 9, 14],
                                  condition={"alpha": 80.0}, guide=guide, guidance=1.0)
    assert s1["network_calls"] == 2 * 11
    for (a, _), (b, _) in zip(plain, same):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), atol=1e-4, rtol=1e-4)
    pushed, _ = cond.sample_arrays(3, sampler="synchronous", steps=10, seed=0, num_atoms=[5, 9, 14],
                                   condition={"alpha": 80.0}, guide=guide, guidance=3.0)
    assert any(not torch.allclose(torch.as_tensor(a), torch.as_tensor(b)) for (a, _), (b, _) in zip(plain, pushed))
    other = _model(4, context=("gap",), context_mean=(6.8,), context_mad=(1.0,))
    with pytest.raises(EADError, match="context"):
        cond.guided_by(other, 2.0)
    with pytest.raises(EADError, match="context"):
        guide.guided_by(cond, 2.0)        # an unconditional model is not guided by a conditional one
