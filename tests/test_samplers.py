"""Sampler schedules: the ±C constraint, termination, call counts, EDM equivalence, invariance."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import random_rotation
from ead import EADError
from ead.model.config import ModelConfig
from ead.data.batch import molecule_index, remove_mean
from ead.diffusion.sampler import run_sampler
from ead.diffusion.schedules import make_schedule
from ead.pipeline import EAD


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("micro", size_histogram={5: 1, 9: 2, 14: 1}, window=9)
    m = EAD(cfg, device="cpu")
    for blk in m.denoiser.egnn.blocks:   # non-trivial dynamics for an untrained net
        torch.nn.init.normal_(blk.coord_out.weight, std=0.05)
    return m


def _spread_log(model, name, sizes, **opts):
    sched = model.make_schedule(name, **opts)
    n = torch.tensor(sizes)
    mol = molecule_index(n)
    spreads, times = [], []

    def on_step(k, t, z_x, z_h):
        tmax = torch.zeros(len(n), dtype=torch.long).scatter_reduce(0, mol, t, "amax", include_self=False)
        tmin = torch.full((len(n),), 10**6).scatter_reduce(0, mol, t, "amin", include_self=False)
        spreads.append(int((tmax - tmin).max()))
        times.append(t.clone())

    res = run_sampler(model._denoise, model.noise, sched, n, model.config.num_features,
                      len(model.config.atom_types), torch.Generator().manual_seed(0), on_step=on_step)
    return res, spreads, times, sched


@pytest.mark.parametrize("steps", [1000, 100, 25])
@pytest.mark.parametrize("ratio,history", [(0.8, 2), (0.6, 1), (0.5, 5), (1.0, 2)])
def test_adaptive_respects_window_and_terminates(model, steps, ratio, history):
    res, spreads, times, sched = _spread_log(model, "adaptive", (5, 9, 14), steps=steps,
                                             async_ratio=ratio, history=history, t_async=600)
    assert max(spreads) <= 2 * 9
    assert int(times[-1].max()) == 0                      # every atom reached t = 0
    for a, b in zip(times, times[1:]):
        assert (b <= a).all() and (b < a).any()           # times never go up; every call advances
    stride = 1000 / steps
    # calls: the grid's steps, + the decoding call at t = 0, + the catch-up of atoms lagging by up
    # to 2C when the leaders are done (a λ share of them per call: log_{1/(1-λ)} M calls at most)
    # Each call moves at least a λ share of the noisy atoms one grid point, so ≤ steps/λ calls.
    catch_up = math.ceil(2 * 9 / stride) + math.ceil(math.log2(14))
    assert steps + 1 <= res.network_calls <= math.ceil(steps / ratio) + 1 + catch_up
    if ratio < 1.0:
        assert max(spreads) > 0                           # it really is asynchronous


def test_adaptive_call_count_near_T(model):
    res, spreads, _, _ = _spread_log(model, "adaptive", (9, 14), steps=1000, async_ratio=0.8,
                                     history=2, t_async=500)
    # the paper: about T plus the lag (≤ 2C); measured here 1000 + 37 for λ = 0.8
    assert 1001 <= res.network_calls <= 1000 + 2 * 9 + 30


@pytest.mark.parametrize("steps", [1000, 50])
def test_manual_respects_window(model, steps):
    res, spreads, times, _ = _spread_log(model, "manual", (5, 9, 14), steps=steps, t_async=700)
    assert max(spreads) <= 2 * 9 and max(spreads) > 0
    assert int(times[-1].max()) == 0


def test_synchronous_keeps_atoms_together(model):
    res, spreads, times, _ = _spread_log(model, "synchronous", (5, 9), steps=40)
    assert max(spreads) == 0 and res.network_calls == 41


def test_synchronous_equals_edm_sampling(model):
    """Our synchronous sampler == EDM's ancestral loop (gamma form, padded batch) with the same
    noise draws. EDM: for s = T-1..0: z_s ~ p(z_s|z_t) ; then x from z_0 with ε̂ at t = 0."""
    T = model.config.timesteps
    n = torch.tensor([6, 4])
    mol = molecule_index(n)
    F_ = model.config.num_features
    sched = model.make_schedule("synchronous", steps=T)
    res = run_sampler(model._denoise, model.noise, sched, n, F_, 5, torch.Generator().manual_seed(7))

    # reference: EDM's formulas written with gammas, float64 coefficients
    gamma = torch.from_numpy(-(np.log(model.noise.alpha2.numpy()) - np.log1p(-model.noise.alpha2.numpy())))
    g = torch.Generator().manual_seed(7)
    z_x = remove_mean(torch.randn(len(mol), 3, generator=g), mol, 2)
    z_h = torch.randn(len(mol), F_, generator=g)
    from ead.data.batch import full_edges

    edges = full_edges(n)
    for s in reversed(range(T)):
        t = s + 1
        gs, gt = gamma[s], gamma[t]
        sigma2_ts = -torch.expm1(F.softplus(gs) - F.softplus(gt))
        alpha_ts = torch.exp(0.5 * (F.logsigmoid(-gt) - F.logsigmoid(-gs)))
        sigma_s, sigma_t = torch.sqrt(torch.sigmoid(gs)), torch.sqrt(torch.sigmoid(gt))
        time = torch.full((len(mol),), t / T)
        ex, eh = model.denoiser(z_x, z_h, time, mol, 2, edges)
        mu_x = z_x / alpha_ts - (sigma2_ts / alpha_ts / sigma_t) * ex
        mu_h = z_h / alpha_ts - (sigma2_ts / alpha_ts / sigma_t) * eh
        std = torch.sqrt(sigma2_ts) * sigma_s / sigma_t
        eta_x = remove_mean(torch.randn(len(mol), 3, generator=g), mol, 2)
        eta_h = torch.randn(len(mol), F_, generator=g)
        z_x = remove_mean((mu_x + std * eta_x).float(), mol, 2)
        z_h = (mu_h + std * eta_h).float()
    ex, eh = model.denoiser(z_x, z_h, torch.zeros(len(mol)), mol, 2, edges)
    g0 = gamma[0]
    x = (z_x - torch.sqrt(torch.sigmoid(g0)) * ex) / torch.sqrt(torch.sigmoid(-g0))
    x = remove_mean(x.float(), mol, 2)
    assert res.network_calls == T + 1
    assert torch.allclose(res.positions, x, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["synchronous", "manual", "adaptive"])
def test_sampler_is_rotation_equivariant(model, name):
    """Same seed, rotated initial noise (and no per-step noise) → the rotated molecule: the
    schedule's decisions (ranks by distance, velocities) are invariant."""
    torch.set_default_dtype(torch.float64)
    try:
        m = EAD(model.config, model.denoiser.double(), device="cpu")
        n = torch.tensor([7, 11])
        mol = molecule_index(n)
        g = torch.Generator().manual_seed(3)
        zx = remove_mean(torch.randn(len(mol), 3, generator=g), mol, 2)
        zh = torch.randn(len(mol), m.config.num_features, generator=g)
        R = random_rotation(5)
        runs = []
        for x0 in (zx, zx @ R.T):
            sched = m.make_schedule(name, steps=60, t_async=600)
            runs.append(run_sampler(m._denoise, m.noise, sched, n, m.config.num_features, 5,
                                    torch.Generator().manual_seed(0), z_init=(x0, zh),
                                    dtype=torch.float64, noise_scale=0.0))
        assert runs[0].network_calls == runs[1].network_calls
        assert torch.allclose(runs[1].positions, runs[0].positions @ R.T, atol=1e-7)
        assert torch.equal(runs[1].atom_index, runs[0].atom_index)
    finally:
        torch.set_default_dtype(torch.float32)
        model.denoiser.float()


def test_bad_sampler_options(model):
    with pytest.raises(EADError):
        model.make_schedule("nope")
    with pytest.raises(EADError):
        model.make_schedule("adaptive", async_ratio=0.0)
    with pytest.raises(EADError):
        model.make_schedule("adaptive", history=0)
    with pytest.raises(EADError):
        model.make_schedule("synchronous", steps=5000)
    with pytest.raises(EADError):
        model.make_schedule("manual", t_async=2000)


def test_sample_is_reproducible_and_returns_rdkit(model):
    a = model.sample(3, sampler="adaptive", steps=20, seed=11)
    b = model.sample(3, sampler="adaptive", steps=20, seed=11)
    assert [m.GetNumAtoms() for m in a] == [m.GetNumAtoms() for m in b]
    pa = np.concatenate([m.GetConformer().GetPositions() for m in a])
    pb = np.concatenate([m.GetConformer().GetPositions() for m in b])
    assert np.allclose(pa, pb)
    assert a[0].GetProp("ead_sampler") == "adaptive" and a[0].GetConformer().Is3D()


def test_bf16_sampling_is_opt_in_and_recorded(model):
    """EAD.autocast = "bf16" runs the network in bfloat16 (CPU autocast here); the molecules stay
    finite, differ from float32 only by the rounding, and the settings say which precision."""
    ref, s32 = next(model.sample_batches(3, sampler="synchronous", steps=5, seed=1))
    model.autocast = "bf16"
    try:
        low, s16 = next(model.sample_batches(3, sampler="synchronous", steps=5, seed=1))
    finally:
        model.autocast = None
    assert "precision" not in s32 and s16["precision"] == "bf16"
    assert torch.isfinite(low.positions).all()
    assert not torch.equal(low.positions, ref.positions)
    rel = float((low.positions - ref.positions).norm() / ref.positions.norm())
    assert rel < 0.2, rel


def test_stall_lag_keeps_the_window_and_moves_stalled_atoms_partly(model):
    """stall_lag L: a stalled atom moves k − L instead of 0 on a stride-k grid; every molecule
    still stays inside ±C and every atom still ends at t = 0. 0 = the paper's stop."""
    runs = {}
    for lag in (0, 2):
        res, spreads, times, sched = _spread_log(model, "adaptive", (5, 9, 14), steps=100, stall_lag=lag,
                                                 t_async=600)
        assert max(spreads) <= 2 * 9 and int(times[-1].max()) == 0
        runs[lag] = (res, spreads)
    assert runs[2][0].network_calls <= runs[0][0].network_calls + 2
    # how fast the lag inside a molecule grows: a whole stride per stall (paper) against L units
    growth = {lag: max(b - a for a, b in zip(sp, sp[1:])) for lag, (_, sp) in runs.items()}
    assert growth[0] >= 10 and growth[2] <= 2, growth
    assert model.make_schedule("adaptive", steps=100).stall_lag == 1              # the default
    assert model.make_schedule("adaptive", steps=100, spacing="snr").stall_lag == 0
    with pytest.raises(EADError, match="uniform"):
        model.make_schedule("adaptive", steps=100, spacing="snr", stall_lag=2)
    with pytest.raises(EADError, match="stall_lag"):
        model.make_schedule("adaptive", steps=100, stall_lag=-1)


def test_default_stall_lag_is_the_papers_rule_at_full_steps(model):
    """At steps = T the stride is one time unit: the default (L = 1) and the paper's stop (L = 0)
    give the same molecules, bit for bit."""
    out = [_spread_log(model, "adaptive", (5, 9), steps=1000, stall_lag=lag, t_async=600)[0]
           for lag in (0, 1)]
    assert out[0].network_calls == out[1].network_calls
    assert torch.equal(out[0].positions, out[1].positions) and torch.equal(out[0].atom_index, out[1].atom_index)


def test_default_sampler_runs_at_the_models_own_T(tmp_path):
    # a model trained with T = 200 samples with its defaults (steps = its T, not a fixed 1000)
    cfg = ModelConfig.from_preset("micro", size_histogram={5: 1}, window=3, timesteps=200)
    m = EAD.from_pretrained(EAD(cfg, device="cpu").save_pretrained(tmp_path / "t200"), device="cpu")
    arrays, settings = m.sample_arrays(2, seed=0)
    assert settings["sampler"] == "adaptive" and settings["steps"] == 200
    assert len(arrays) == 2 and all(np.isfinite(p).all() for p, _ in arrays)


def test_diverged_molecules_are_dropped_with_their_targets():
    from ead.pipeline import drop_diverged

    good = (np.zeros((3, 3)), np.array([6, 1, 1]))
    bad = (np.array([[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]]), np.array([6, 8]))
    nan = (np.full((2, 3), np.nan), np.array([1, 1]))
    kept, targets, dropped = drop_diverged([good, bad, nan, good], {"alpha": [1.0, 2.0, 3.0, 4.0]})
    assert dropped == 2 and len(kept) == 2 and targets == {"alpha": [1.0, 4.0]}
    assert drop_diverged([good], {})[2] == 0
