"""Dummy-atom size mode (docs/method.md §8): slots padded with an "absent" type, in data, training and
sampling; and the conversion of a p(M) run into a dummy-atom one by --init-from."""

import numpy as np
import pytest
import torch

from ead import EADError
from ead.cli import main
from ead.model.config import ModelConfig
from ead.data.batch import FeatureEncoder, collate
from ead.data.elements import ABSENT
from ead.diffusion.sampler import SampleResult
from ead.diffusion.loss import TrainingWindow
from ead.model.build import build_denoiser
from ead.pipeline import EAD, drop_empty, split_result
from ead.train import TrainConfig, train
from ead.train.checkpoint import init_widening as _init_widening
from ead.train.checkpoint import widen_inputs as _widen_inputs


def test_padding_keeps_real_atoms_and_puts_absent_ones_at_the_centroid(qm9_train):
    mols = qm9_train.subset(np.arange(5))
    mols.properties = np.arange(10, dtype=np.float32).reshape(5, 2)
    padded = mols.with_absent(29)
    assert len(padded) == 5 and (padded.num_atoms == 29).all()
    assert (padded.properties == mols.properties).all()
    for i in range(5):
        pos, z = mols.molecule(i)
        ppos, pz = padded.molecule(i)
        n = len(z)
        assert (pz[:n] == z).all() and (pz[n:] == ABSENT).all()
        assert np.array_equal(ppos[:n], pos)
        assert np.allclose(ppos[n:], pos.mean(0), atol=1e-5)
        # centring the padded molecule moves the real atoms exactly as centring them alone does
        assert np.allclose(ppos.mean(0), pos.mean(0), atol=1e-5)
    with pytest.raises(EADError, match="more than the model's 8 slots"):
        mols.with_absent(8)


def test_absent_type_is_one_more_one_hot_slot():
    cfg = ModelConfig(size_mode="dummy", max_atoms=29, absent_bias=9)
    assert cfg.feature_types == (1, 6, 7, 8, 9, ABSENT) and cfg.num_features == 7
    assert ModelConfig().num_features == 6 and not ModelConfig().dummy
    enc = FeatureEncoder(cfg.feature_types)
    h = enc.encode(torch.tensor([6, ABSENT, 1]))
    assert h[1].tolist() == [0, 0, 0, 0, 0, 0.25, 0.0]     # one-hot / 4, charge 0
    assert enc.decode(h).tolist() == [6, ABSENT, 1]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = ModelConfig().to_dict()
    for k in ("size_mode", "max_atoms", "absent_bias"):   # configs written before the mode existed
        old.pop(k)
    assert ModelConfig.from_dict(old) == ModelConfig()
    for bad, msg in ((dict(size_mode="dummy"), "max_atoms"), (dict(size_mode="pad"), "unknown size mode"),
                     (dict(atom_types=(0, 6)), "implied"), (dict(absent_bias=-1), "absent_bias")):
        with pytest.raises(EADError, match=msg):
            ModelConfig(**bad)


def test_absent_atoms_are_later_in_time_and_the_rest_is_unchanged():
    mol = torch.repeat_interleave(torch.arange(200), 10)
    absent = torch.arange(2000) % 10 >= 6
    for window in (0, 9):
        plain = TrainingWindow(1000, window).sample(mol, 200, torch.Generator().manual_seed(1))
        biased = TrainingWindow(1000, window, absent_bias=40).sample(mol, 200, torch.Generator().manual_seed(1),
                                                                      absent)
        # no extra random draws: real atoms get the times they had, absent ones 40 later (clipped)
        unclipped_plain = TrainingWindow(1000, window).sample(mol, 200, torch.Generator().manual_seed(1))
        assert torch.equal(plain, unclipped_plain) and torch.equal(biased[~absent], plain[~absent])
        base = plain[absent]
        assert torch.equal(biased[absent], (base + 40).clamp(max=1000)) or window  # C = 0: exact
        assert (biased[absent] >= plain[absent]).all() and biased.max() <= 1000


def test_split_result_drops_absent_atoms_and_recentres():
    pos = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0.0, 0, 0], [3.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    types = np.array([1, 6, 7, 8, 9, ABSENT])
    res = SampleResult(pos, torch.tensor([1, 1, 5, 1, 5, 5]), torch.tensor([3, 3]), 1)
    (p0, z0), (p1, z1) = split_result(res, types)
    assert z0.tolist() == [6, 6] and np.allclose(p0.mean(0), 0) and np.allclose(p0[:, 0], [1, -1])
    assert z1.tolist() == [6] and np.allclose(p1, 0)
    res = SampleResult(pos, torch.tensor([5, 5, 5, 1, 2, 5]), torch.tensor([3, 3]), 1)
    mols = split_result(res, types)
    assert len(mols[0][1]) == 0 and mols[1][1].tolist() == [6, 7]
    kept, targets, dropped = drop_empty(mols, {"alpha": [50.0, 70.0]})
    assert len(kept) == 1 and targets == {"alpha": [70.0]} and dropped == 1


def test_a_dummy_model_learns_which_slots_are_empty(tmp_path, qm9_train):
    """Overfit 8 QM9 molecules padded to 29 slots: at a middle noise level (t = 200, σ/α = 0.27)
    the decoded types mark the absent slots. Measured: 97 % of the slots right after 250 steps,
    64 % with the same network untrained (at t = 30 both are at 100 %: the noise is too small to
    tell)."""
    run = tmp_path / "run"
    s = train(TrainConfig(run_dir=str(run), preset="tiny", size_mode="dummy", limit_molecules=8,
                          batch_size=8, lr=2e-3, ema_decay=0.9, max_steps=250, val_every=0,
                          ckpt_every=250, log_every=50, quiet=True, threads=1, accelerator="cpu",
                          warmup_steps=0, precision="32-true"))   # the settings its threshold was set with
    model = EAD.from_pretrained(run / "model")
    cfg = model.config
    assert s["step"] == 250 and cfg.dummy and cfg.max_atoms == 29 and cfg.absent_bias == cfg.window
    torch.manual_seed(1)
    fresh = EAD(cfg, build_denoiser(cfg))
    padded = qm9_train.subset(np.arange(8)).with_absent(29)
    batch = collate(padded, np.arange(8), model.encoder)
    truth = batch.atomic_numbers == ABSENT
    t = torch.full((len(batch.mol),), 200)

    def absent_right(m):
        g = torch.Generator().manual_seed(0)
        z_x, z_h, _, _ = m.noise.add_noise(batch.x, batch.h, t, batch.mol, 8, g)
        with torch.no_grad():
            _, eps_h = m.denoiser(z_x, z_h, t.float() / cfg.timesteps, batch.mol, 8, batch.edge_index)
        decoded = m.encoder.decode(m.noise.predict_clean(z_h, eps_h, t))
        return float(((decoded == ABSENT) == truth).float().mean())

    assert absent_right(model) >= 0.9 and absent_right(fresh) < 0.8

    mols, settings = model.sample_arrays(6, steps=10, seed=0)
    assert settings["empty_dropped"] + len(mols) == 6
    assert all(0 < len(z) <= 29 and ABSENT not in z for _, z in mols)


def test_a_prior_run_becomes_a_dummy_one_with_the_same_function(tmp_path):
    """--init-from a p(M) run: one zero input column for the absent type, so on real atoms the
    widened network computes what the old one did."""
    prior = ModelConfig.from_preset("micro", window=3)
    dummy = ModelConfig.from_preset("micro", window=3, size_mode="dummy", max_atoms=12, absent_bias=3)
    assert _init_widening(prior, dummy) == [(5, 1)]
    assert _init_widening(dummy, prior) is None
    assert _init_widening(prior, ModelConfig.from_preset("micro", window=4)) is None
    cond = ModelConfig.from_preset("micro", window=3, size_mode="dummy", max_atoms=12, absent_bias=3,
                                   context=("alpha",), context_mean=(1.0,), context_mad=(1.0,))
    assert _init_widening(prior, cond) == [(5, 1), (7, 1)]

    torch.manual_seed(0)
    old = build_denoiser(prior)
    new = build_denoiser(dummy)
    tensors = _widen_inputs({f"model.{k}": v for k, v in old.state_dict().items()}, 5, 1)
    new.load_state_dict({k[6:]: v for k, v in tensors.items()})
    n = 7
    mol = torch.zeros(n, dtype=torch.long)
    edges = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j]).T
    x, h, t = torch.randn(n, 3), torch.randn(n, 6), torch.full((n,), 0.4)
    h_new = torch.cat([h[:, :5], torch.zeros(n, 1), h[:, 5:]], 1)
    with torch.no_grad():
        ex, eh = old(x, h, t, mol, 1, edges)
        ex2, eh2 = new(x, h_new, t, mol, 1, edges)
    assert torch.allclose(ex, ex2, atol=1e-6)
    assert torch.allclose(eh, torch.cat([eh2[:, :5], eh2[:, 6:]], 1), atol=1e-6)


def test_cli_trains_from_a_prior_run_and_samples_a_dummy_model(tmp_path, capsys):
    base = dict(preset="micro", limit_molecules=16, batch_size=8, val_every=0, ckpt_every=2, log_every=1,
                quiet=True, threads=1, accelerator="cpu")
    train(TrainConfig(run_dir=str(tmp_path / "p"), max_steps=2, **base))
    train(TrainConfig(run_dir=str(tmp_path / "d"), max_steps=2, size_mode="dummy", max_atoms=30,
                      init_from=str(tmp_path / "p"), **base))
    model = tmp_path / "d" / "model"
    assert EAD.from_pretrained(model).card["continues"][0]["run"] == str(tmp_path / "p")
    assert main(["info", "--model", str(model)]) == 0
    assert "dummy atoms, 30 slots" in capsys.readouterr().out
    out = tmp_path / "s.xyz"
    assert main(["sample", "--model", str(model), "-n", "4", "-o", str(out), "--steps", "5",
                 "--num-atoms", "9", "--quiet"]) == 0
    from ead.data.files import read_molecules

    read = read_molecules(out)
    assert len(read.molecules) <= 4 and all(len(z) <= 9 for _, z in read.molecules)
    with pytest.raises(EADError, match="belong to --size-mode dummy"):
        train(TrainConfig(run_dir=str(tmp_path / "x"), max_steps=1, max_atoms=20, **base))
    assert main(["train", "--run-dir", str(tmp_path / "y"), "--size-mode", "pad"]) == 2
