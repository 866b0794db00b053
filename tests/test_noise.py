"""Noise schedule, per-atom forward process, training window and the reverse step."""

import math

import numpy as np
import pytest
import torch

from ead import EADError
from ead.data.batch import full_edges, molecule_index, remove_mean
from ead.diffusion.noise import NoiseSchedule, strided_times
from ead.diffusion.loss import TrainingWindow


def test_polynomial_2_table():
    s = NoiseSchedule("polynomial_2", 1000, 1e-5)
    a2 = s.alpha(torch.arange(1001)) ** 2
    assert abs(float(a2[500]) - 0.5625) < 1e-4
    lsnr = s.log_snr(torch.tensor([0, 1000]))
    assert 11.3 < float(lsnr[0]) < 11.7 and -11.7 < float(lsnr[1]) < -11.3
    assert (torch.diff(a2) < 0).all()                    # signal decreases monotonically
    # independent formula, away from the clipped tail: (1-2s)(1-(t/T)^2)^2 + s
    t = np.arange(0, 900)
    ref = (1 - 2e-5) * (1 - (t / 1000) ** 2) ** 2 + 1e-5
    assert np.allclose(a2[:900].numpy(), ref, rtol=1e-9)


def test_cosine_schedule_and_unknown():
    s = NoiseSchedule("cosine", 1000)
    a2 = s.alpha(torch.arange(1001)) ** 2
    assert float(a2[0]) > 0.999 and float(a2[-1]) < 1e-3
    with pytest.raises(EADError):
        NoiseSchedule("linear")


def _batch(sizes=(4, 7, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(sizes)
    mol = molecule_index(n)
    x = remove_mean(torch.randn(len(mol), 3, generator=g, dtype=torch.float64), mol, len(n))
    h = torch.randn(len(mol), 6, generator=g, dtype=torch.float64)
    return x, h, mol, n


def test_add_noise_uses_each_atoms_own_time():
    s = NoiseSchedule()
    x, h, mol, n = _batch()
    t = torch.tensor([0, 10, 500, 999, 1000, 3, 700, 250, 250, 1, 2, 600, 601])
    z_x, z_h, ex, eh = s.add_noise(x, h, t, mol, len(n), torch.Generator().manual_seed(1))
    tt = t.double().numpy()
    a2 = (1 - 2e-5) * (1 - (tt / 1000) ** 2) ** 2 + 1e-5   # no clipping below t≈950
    alpha = torch.from_numpy(np.where(tt < 950, np.sqrt(a2), s.alpha(t).numpy()))[:, None]
    sigma = torch.sqrt(1 - alpha**2)
    assert torch.allclose(z_h, alpha * h + sigma * eh, atol=1e-12)
    assert torch.allclose(z_x, remove_mean(alpha * x + sigma * ex, mol, len(n)), atol=1e-12)
    com = torch.zeros(len(n), 3, dtype=ex.dtype).index_add_(0, mol, ex)
    assert com.abs().max() < 1e-12                       # ε^x is zero-CoM
    zcom = torch.zeros(len(n), 3, dtype=ex.dtype).index_add_(0, mol, z_x)
    assert zcom.abs().max() < 1e-12                      # and z^x is re-centred


@pytest.mark.parametrize("window", [0, 1, 9, 50])
def test_training_window(window):
    n = torch.randint(1, 30, (500,), generator=torch.Generator().manual_seed(0))
    mol = molecule_index(n)
    t = TrainingWindow(1000, window).sample(mol, len(n), torch.Generator().manual_seed(window))
    assert int(t.min()) >= 0 and int(t.max()) <= 1000
    tmax = torch.zeros(len(n), dtype=torch.long).scatter_reduce(0, mol, t, "amax", include_self=False)
    tmin = torch.full((len(n),), 10**9).scatter_reduce(0, mol, t, "amin", include_self=False)
    spread = tmax - tmin
    assert int(spread.max()) <= 2 * window
    if window == 0:
        assert int(spread.max()) == 0                     # C = 0 is EDM: one time per molecule
    else:
        assert int(spread.max()) > 0
        assert int(t.max()) == 1000 and int(t.min()) == 0  # clipping reaches both ends


def test_reverse_step_mean_is_the_posterior_with_true_noise():
    """With ε̂ = the true ε, the step's mean equals the closed-form q(z_s | z_t, x_0)."""
    s = NoiseSchedule()
    x, h, mol, n = _batch(seed=3)
    x0 = torch.cat([x, h], -1)
    g = torch.Generator().manual_seed(5)
    t = torch.randint(1, 1001, (len(mol),), generator=g)
    s_t = (t - torch.randint(0, 40, (len(mol),), generator=g)).clamp_min(0)  # any s_i ≤ t_i
    s_t[::4] = t[::4]                                                       # some atoms stay
    eps = torch.randn(len(mol), 9, generator=g, dtype=torch.float64)
    a = s.alpha(t)[:, None]
    sg = s.sigma(t)[:, None]
    z = a * x0 + sg * eps
    # step with the noise switched off returns the mean; compare coordinate-free (h part) and x
    mean_x, mean_h = s.step(z[:, :3], z[:, 3:], eps[:, :3], eps[:, 3:], t, s_t, mol, len(n),
                            noise_scale=0.0)
    post_mean, post_std = s.posterior(x0, z, t, s_t)
    assert torch.allclose(mean_h, post_mean[:, 3:], atol=1e-8)
    assert torch.allclose(mean_x, remove_mean(post_mean[:, :3], mol, len(n)), atol=1e-8)
    _, _, c = s.step_coefficients(t, s_t)
    assert torch.allclose(c, post_std, atol=1e-10)
    unchanged = s_t == t
    assert unchanged.any() and torch.allclose(mean_h[unchanged], z[unchanged, 3:])


def test_strided_grids():
    s = NoiseSchedule()
    for spacing in ("uniform", "snr"):
        for k in (1, 7, 25, 100, 1000):
            g = strided_times(1000, k, spacing, s)
            assert len(g) == k + 1 and g[0] == 1000 and g[-1] == 0
            assert all(a > b for a, b in zip(g, g[1:]))
    with pytest.raises(EADError):
        strided_times(1000, 0)
    with pytest.raises(EADError):
        strided_times(1000, 1001)
