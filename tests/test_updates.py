"""Update rules (ancestral / DDIM / DPM-Solver++(2M)) against a denoiser known in closed form."""

import math

import pytest
import torch

from ead import EADError
from ead.data.batch import molecule_index, remove_mean
from ead.diffusion.noise import NoiseSchedule
from ead.diffusion.sampler import run_sampler
from ead.diffusion.schedules import make_schedule

SCALE = 0.7   # data: x ~ N(0, SCALE² I) per coordinate and feature (zero-CoM for coordinates)


def gaussian_denoiser(noise):
    """The exact ε̂ for Gaussian data: E[ε | z_t] = σ·z/(α²·SCALE² + σ²), per atom."""
    a2 = noise.alpha2

    def denoise(z_x, z_h, time, mol, num_molecules, edges, context=None):
        t = torch.round(time * noise.timesteps).long()
        alpha2 = a2[t].to(z_x.dtype).unsqueeze(-1)
        var = alpha2 * SCALE**2 + (1 - alpha2)
        sigma = (1 - alpha2).sqrt()
        return sigma * z_x / var, sigma * z_h / var

    return denoise


def _run(name, steps, update, eta=1.0, seed=0, **opts):
    torch.set_default_dtype(torch.float64)
    try:
        noise = NoiseSchedule("polynomial_2", 1000)
        n = torch.tensor([6, 9])
        mol = molecule_index(n)
        g = torch.Generator().manual_seed(1)
        zx = remove_mean(torch.randn(len(mol), 3, generator=g, dtype=torch.float64), mol, 2)
        zh = torch.randn(len(mol), 4, generator=g, dtype=torch.float64)
        sched = make_schedule(name, noise, steps=steps, update=update, eta=eta, **opts)
        res = run_sampler(gaussian_denoiser(noise), noise, sched, n, 4, 4, torch.Generator().manual_seed(seed),
                          z_init=(zx, zh), dtype=torch.float64)
        # the probability-flow ODE keeps (z − α·μ)/√(α²·SCALE² + σ²) fixed: its exact end point
        a2T = float(noise.alpha2[-1])
        exact = zh * SCALE / math.sqrt(a2T * SCALE**2 + 1 - a2T)
        return res, exact
    finally:
        torch.set_default_dtype(torch.float32)


def _one_step_inputs(seed):
    """Two molecules (5 and 7 atoms) at random per-atom times t, targets s ≤ t, iterate and ε̂:
    the arguments of one update call (float64)."""
    noise = NoiseSchedule("polynomial_2", 1000)
    torch.manual_seed(seed)
    mol = molecule_index(torch.tensor([5, 7]))
    d = torch.float64
    zx, zh = remove_mean(torch.randn(12, 3, dtype=d), mol, 2), torch.randn(12, 4, dtype=d)
    ex, eh = remove_mean(torch.randn(12, 3, dtype=d), mol, 2), torch.randn(12, 4, dtype=d)
    t = torch.randint(1, 1001, (12,))
    s = (t - torch.randint(0, 40, (12,))).clamp_min(0)
    return noise, (zx, zh, ex, eh, t, s, mol, 2)


@pytest.mark.parametrize("steps", [10, 25])
def test_dpm2m_is_more_accurate_than_ddim(steps):
    errs = {}
    for update in ("ancestral", "dpm2m"):
        res, exact = _run("synchronous", steps, update, eta=0.0)
        errs[update] = float((res.features - exact).abs().max())
    fine, exact = _run("synchronous", 1000, "dpm2m")
    assert float((fine.features - exact).abs().max()) < 2e-3       # converges to the ODE's solution
    assert errs["dpm2m"] < 0.5 * errs["ancestral"], errs           # second order beats first order


def test_ddim_is_deterministic_and_eta_adds_noise():
    a, _ = _run("synchronous", 20, "ancestral", eta=0.0, seed=0)
    b, _ = _run("synchronous", 20, "ancestral", eta=0.0, seed=1)
    assert torch.equal(a.features, b.features)
    c, _ = _run("synchronous", 20, "ancestral", eta=0.5, seed=0)
    d, _ = _run("synchronous", 20, "ancestral", eta=0.5, seed=1)
    assert not torch.allclose(c.features, d.features)


def test_eta_near_one_matches_the_ancestral_step():
    """DDIM's family at eta → 1 is EDM's ancestral step (the same posterior, written another way)."""
    from ead.diffusion.updates import Ancestral

    noise, args = _one_step_inputs(0)
    ref = Ancestral(1.0)(noise, *args, torch.Generator().manual_seed(5))
    alt = Ancestral(1.0 - 1e-12)(noise, *args, torch.Generator().manual_seed(5))
    for u, v in zip(ref, alt):
        assert torch.allclose(u, v, atol=1e-8)


@pytest.mark.parametrize("name", ["manual", "adaptive"])
def test_dpm2m_with_asynchronous_times(name):
    """Per-atom times: every atom still ends at t = 0, near the ODE's end point."""
    res, exact = _run(name, 100, "dpm2m", window=9, t_async=600)
    assert torch.isfinite(res.features).all()
    assert float((res.features - exact).abs().max()) < 0.01     # DDIM: 0.025 here


def test_bad_update_options():
    noise = NoiseSchedule("polynomial_2", 1000)
    with pytest.raises(EADError, match="update rule"):
        make_schedule("synchronous", noise, update="euler")
    with pytest.raises(EADError, match="eta"):
        make_schedule("adaptive", noise, eta=1.5)


def test_sde_dpm2m_first_move_is_the_ancestral_step():
    from ead.diffusion.updates import make_update

    noise, args = _one_step_inputs(1)
    ref = make_update("ancestral")(noise, *args, torch.Generator().manual_seed(5))
    sde = make_update("sde-dpm2m")
    sde.reset()
    out = sde(noise, *args, torch.Generator().manual_seed(5))
    for u, v in zip(ref, out):
        assert torch.allclose(u, v, atol=1e-10)


def test_sde_dpm2m_samples_the_data_spread_in_few_steps():
    """Exact ε̂ for Gaussian data, 10 steps: the ancestral sampler's samples come out too narrow
    (first-order error); the second-order SDE solver's spread is much closer to the data's."""
    torch.set_default_dtype(torch.float64)
    try:
        noise = NoiseSchedule("polynomial_2", 1000)
        n = torch.full((300,), 10)
        spread = {}
        for update in ("ancestral", "sde-dpm2m"):
            sched = make_schedule("synchronous", noise, steps=10, update=update)
            res = run_sampler(gaussian_denoiser(noise), noise, sched, n, 4, 4, torch.Generator().manual_seed(0),
                              dtype=torch.float64)
            spread[update] = abs(float(res.features.std()) - SCALE)
        assert spread["sde-dpm2m"] < 0.5 * spread["ancestral"], spread   # measured 0.02 vs 0.13
    finally:
        torch.set_default_dtype(torch.float32)


def test_langevin_corrector_pulls_samples_to_the_right_spread():
    """Exact ε̂ for Gaussian data, 10 ancestral steps: too narrow a spread (first-order error); a
    Langevin corrector after each move (exact score) widens it toward the data's, and each
    corrector step is one more network call. (With `sde-dpm2m`, whose spread is already close,
    the same corrector overshoots: docs/recipe.md.)"""
    torch.set_default_dtype(torch.float64)
    try:
        noise = NoiseSchedule("polynomial_2", 1000)
        n = torch.full((300,), 10)
        spread, calls = {}, {}
        for k in (0, 2):
            sched = make_schedule("synchronous", noise, steps=10, update="ancestral", corrector_steps=k,
                                  corrector_snr=0.5)
            res = run_sampler(gaussian_denoiser(noise), noise, sched, n, 4, 4, torch.Generator().manual_seed(0),
                              dtype=torch.float64)
            spread[k], calls[k] = abs(float(res.features.std()) - SCALE), res.network_calls
            x = res.positions.reshape(300, 10, 3)
            assert float(x.mean(1).abs().max()) < 1e-9     # still zero-CoM per molecule
        assert calls[0] == 11 and calls[2] == 11 + 2 * 9    # no corrector after the last move (t = 0)
        assert spread[2] < 0.5 * spread[0], spread        # measured 0.056 against 0.131
        assert sched.settings()["corrector_steps"] == 2 and "corrector_below" not in sched.settings()
        # --corrector-below: only moves that end at 0 < t ≤ 300 are corrected (grid 900, 800, …, 100,
        # 0: three of them)
        low = make_schedule("synchronous", noise, steps=10, update="ancestral", corrector_steps=2,
                            corrector_snr=0.5, corrector_below=300)
        seen = []
        res = run_sampler(gaussian_denoiser(noise), noise, low, n, 4, 4, torch.Generator().manual_seed(0),
                          dtype=torch.float64, on_step=lambda calls, t, zx, zh: seen.append((calls, int(t.max()))))
        assert res.network_calls == 11 + 2 * 3 and low.settings()["corrector_below"] == 300
        # calls so far after each move: one per move, two more after the moves to 300, 200 and 100
        assert [c for c, t in seen if t in (500, 400, 300, 200, 100, 0)] == [5, 6, 9, 12, 15, 16]
        for bad in (0, 1001):
            with pytest.raises(EADError, match="corrector_below"):
                make_schedule("synchronous", noise, steps=10, corrector_steps=1, corrector_below=bad)
        # after the second-order update, whose spread is already close, the corrector overshoots
        over = {}
        for k in (0, 1):
            sched = make_schedule("synchronous", noise, steps=10, update="sde-dpm2m", corrector_steps=k,
                                  corrector_snr=0.3)
            res = run_sampler(gaussian_denoiser(noise), noise, sched, n, 4, 4, torch.Generator().manual_seed(0),
                              dtype=torch.float64)
            over[k] = float(res.features.std()) - SCALE
        assert abs(over[0]) < 0.03 and over[1] > 0.04, over          # measured +0.019 and +0.062
    finally:
        torch.set_default_dtype(torch.float32)


def test_langevin_step_leaves_the_exact_marginal_in_place():
    """At a fixed time with the exact ε̂ of N(0, I) data (the marginal is N(0, I), ε̂ = σ·z), many
    corrector steps keep a N(0, I) sample's spread, and move a too-wide one back to it; atoms that
    are not active stay put."""
    from ead.diffusion.updates import langevin_step

    noise = NoiseSchedule("polynomial_2", 1000)
    g = torch.Generator().manual_seed(0)
    mol = torch.arange(4000).repeat_interleave(5)
    s = torch.full((20000,), 600)
    sigma = noise.sigma(s).float().unsqueeze(-1)
    for start in (1.0, 2.0):
        zx = remove_mean(torch.randn(20000, 3, generator=g) * start, mol, 4000)
        zh = torch.randn(20000, 2, generator=g) * start
        active = torch.ones(20000, dtype=torch.bool)
        for _ in range(400):   # δ = 2·r²·σ² ≈ 0.012: the discretised chain's spread is 1/√(1 − δ/2) ≈ 1.003
            zx, zh = langevin_step(noise, zx, zh, sigma * zx, sigma * zh, s, mol, 4000, 0.1, active, g)
        assert abs(float(zh.std()) - 1.0) < 0.02, (start, float(zh.std()))
    still = torch.zeros(20000, dtype=torch.bool)
    zx2, zh2 = langevin_step(noise, zx, zh, sigma * zx, sigma * zh, s, mol, 4000, 0.3, still, g)
    assert torch.allclose(zh2, zh) and torch.allclose(zx2, zx, atol=1e-6)
