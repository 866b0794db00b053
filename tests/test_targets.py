"""Recipe options that change the network (docs/recipe.md): the prediction target (ε, x0, v),
radial-basis distance features and self-conditioning — exact conversions, equivariance kept,
training and sampling end to end."""

import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_rotation
from ead import EAD, EADError
from ead.data.batch import full_edges, molecule_index, remove_mean
from ead.diffusion.loss import loss_weights
from ead.diffusion.noise import NoiseSchedule
from ead.diffusion.target import EpsilonNetwork, Parameterization
from ead.model.config import ModelConfig
from ead.model.egnn import Denoiser, radial_basis
from ead.train import Checkpointer, TrainConfig, train


def _molecules(seed=0, sizes=(5, 9, 3), features=6):
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(sizes)
    mol = molecule_index(n)
    x = remove_mean(torch.randn(len(mol), 3, generator=g, dtype=torch.float64) * 1.5, mol, len(n))
    h = torch.randn(len(mol), features, generator=g, dtype=torch.float64)
    return x, h, mol, n, g


@pytest.mark.parametrize("target", ["eps", "x0", "v", "x0-types"])
def test_the_true_target_gives_back_the_noise_and_the_data(target):
    """Feeding each target's exact value through `outputs` recovers ε and x0 (one time per molecule,
    so that z is zero-CoM without re-centring)."""
    noise = NoiseSchedule("polynomial_2", 1000)
    x, h, mol, n, g = _molecules()
    t = torch.tensor([1, 500, 990])[mol]
    eps_x = remove_mean(torch.randn(x.shape, generator=g, dtype=x.dtype), mol, len(n))
    eps_h = torch.randn(h.shape, generator=g, dtype=h.dtype)
    a = noise.alpha(t).unsqueeze(-1)
    s = noise.sigma(t).unsqueeze(-1)
    z_x, z_h = a * x + s * eps_x, a * h + s * eps_h
    p = Parameterization(noise, target)
    goal_x, goal_h = p.training_targets(x, h, eps_x, eps_h, t, mol, len(n))
    out_x = goal_x - z_x if p.target_x == "x0" else goal_x     # the coordinate slot is a displacement
    ex, eh, x0x, x0h = p.outputs(out_x, goal_h, z_x, z_h, t, mol, len(n))
    for got, want in ((ex, eps_x), (eh, eps_h), (x0x, x), (x0h, h)):
        assert torch.allclose(got, want, atol=1e-7), target


def test_min_snr_is_one_weighting_whatever_the_target():
    """min-SNR-γ on x0 or v weighs the implied ε-error exactly as min-SNR-γ on ε: ‖x0 − x̂0‖² =
    ‖ε − ε̂‖²/SNR and ‖v − v̂‖² = ‖ε − ε̂‖²·(SNR + 1)/SNR."""
    noise = NoiseSchedule("polynomial_2", 1000)
    t = torch.arange(0, 1001)
    snr = torch.exp(noise.log_snr(t))
    on_eps = loss_weights(noise, t, "min-snr", 5.0, "eps")
    assert torch.allclose(loss_weights(noise, t, "min-snr", 5.0, "x0") / snr, on_eps)
    assert torch.allclose(loss_weights(noise, t, "min-snr", 5.0, "v") * (snr + 1) / snr, on_eps)
    assert loss_weights(noise, t, "uniform", 5.0, "x0") is None


def test_radial_basis_peaks_at_its_centres():
    d = torch.tensor([[0.0], [10.0 / 15 * 3], [10.0]]) ** 2
    r = radial_basis(d, 16)
    assert r.shape == (3, 16)
    assert r.argmax(-1).tolist() == [0, 3, 15] and torch.allclose(r.max(-1).values, torch.ones(3), atol=1e-4)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = Denoiser(6, 0, hidden=32, layers=3, self_condition=True, rbf=8).double().eval()
    for blk in m.egnn.blocks:   # a real coordinate head, so equivariance is not trivial
        torch.nn.init.normal_(blk.coord_out.weight, std=0.3)
    return m


@pytest.mark.parametrize("reflect", [False, True])
def test_rbf_and_self_conditioned_network_is_equivariant(net, reflect):
    x, h, mol, n, g = _molecules()
    t = torch.rand(len(mol), generator=g, dtype=torch.float64)
    sc = (remove_mean(torch.randn(x.shape, generator=g, dtype=x.dtype), mol, len(n)), torch.randn(h.shape, generator=g, dtype=h.dtype))
    e = full_edges(n)
    ex, eh = net(x, h, t, mol, len(n), e, self_cond=sc)
    R, shift = random_rotation(1, reflect), torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64)
    ex2, eh2 = net(x @ R.T + shift, h, t, mol, len(n), e, self_cond=(sc[0] @ R.T - shift, sc[1]))
    assert ex.abs().max() > 1e-3
    assert torch.allclose(ex2, ex @ R.T, atol=1e-9) and torch.allclose(eh2, eh, atol=1e-9)
    # the estimate is read: another estimate, another output; None reads zeros
    ex3, _ = net(x, h, t, mol, len(n), e, self_cond=(sc[0] * 2, sc[1]))
    assert not torch.allclose(ex3, ex)
    zeros = (torch.zeros_like(x), torch.zeros_like(h))
    assert torch.equal(net(x, h, t, mol, len(n), e)[0], net(x, h, t, mol, len(n), e, self_cond=zeros)[0])


def test_sampling_passes_each_call_its_previous_estimate():
    noise = NoiseSchedule("polynomial_2", 100)
    seen = []

    def network(z_x, z_h, time, mol, B, edges, context=None, self_cond=None):
        seen.append(self_cond)
        return torch.zeros_like(z_x), z_h * 0.5
    call = EpsilonNetwork(network, noise, "x0", self_condition=True)
    x, h, mol, n, _ = _molecules()
    time = torch.full((len(mol),), 0.5, dtype=torch.float64)
    call(x, h, time, mol, len(n), None)
    call(x, h, time, mol, len(n), None)
    assert seen[0] is None
    assert torch.allclose(seen[1][0], x) and torch.allclose(seen[1][1], h * 0.5)   # x̂0 of call 1
    call.reset()
    call(x, h, time, mol, len(n), None)
    assert seen[2] is None


def _cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), preset="micro", limit_molecules=16, batch_size=8,
                lr=1e-3, max_steps=6, val_every=0, ckpt_every=3, log_every=3, quiet=True, threads=1,
                window=9)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("options", [dict(target="x0"), dict(target="v", loss_weight="min-snr"),
                                     dict(target="x0-types"), dict(rbf=8),
                                     dict(self_condition=True, target="x0")])
def test_each_option_trains_saves_and_samples(tmp_path, options, capsys):
    s = train(_cfg(tmp_path, **options))
    assert s["step"] == 6 and math.isfinite(s["last_loss"])
    model = EAD.from_pretrained(tmp_path / "run" / "model")
    for k, v in options.items():
        if hasattr(model.config, k):
            assert getattr(model.config, k) == v
    mols, info = model.sample_arrays(4, steps=5, seed=0)
    assert len(mols) == 4 and all(torch.isfinite(torch.as_tensor(p)).all() for p, _ in mols)
    from ead.cli import main

    assert main(["info", "--model", str(tmp_path / "run" / "model")]) == 0
    shown = capsys.readouterr().out
    assert "network:" in shown and "docs/recipe.md" in shown     # every case changes the network


def test_options_change_the_training_and_resume_exactly(tmp_path, monkeypatch):
    from ead.train.loop import RunClock

    opts = dict(target="v", rbf=4, self_condition=True)
    train(_cfg(tmp_path / "edm"))
    train(_cfg(tmp_path / "a", **opts))
    ref = load_file(str(Checkpointer(tmp_path / "edm" / "run").latest() / "state.safetensors"))
    a = load_file(str(Checkpointer(tmp_path / "a" / "run").latest() / "state.safetensors"))
    # rbf and self-conditioning widen the input layers
    assert any(a[k].shape != ref[k].shape for k in ref if k.endswith("embedding.weight"))
    assert any(a[k].shape != ref[k].shape for k in ref if k.endswith("edge_mlp.first.weight"))
    keep_going, calls = RunClock.keep_going, []
    monkeypatch.setattr(RunClock, "keep_going", lambda self: len(calls.append(1) or calls) <= 3 and keep_going(self))
    assert train(_cfg(tmp_path / "b", **opts))["step"] == 3
    monkeypatch.undo()
    assert train(_cfg(tmp_path / "b", **opts))["start_step"] == 3
    b = load_file(str(Checkpointer(tmp_path / "b" / "run").latest() / "state.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(EADError, match="target"):     # the target is part of the run
        train(_cfg(tmp_path / "b", **{**opts, "target": "eps"}, max_steps=9))


def test_bad_options_get_one_line(tmp_path):
    with pytest.raises(EADError):
        ModelConfig(target="score")
    with pytest.raises(EADError):
        TrainConfig(rbf=1000).check()
    r = subprocess.run([sys.executable, "-m", "ead", "train", "--target", "score",
                        "--run-dir", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--target" in r.stderr
