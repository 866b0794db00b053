"""Growing molecules from a fragment: held atoms at t = 0 (docs/fragments.md)."""

import json

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from conftest import random_rotation
from ead import EADError
from ead.cli import main
from ead.data.batch import molecule_index
from ead.data.files import write_sdf, write_xyz
from ead.data.fragment import Fragment, load_fragment
from ead.diffusion.sampler import FixedAtoms, run_sampler
from ead.model.config import ModelConfig
from ead.pipeline import EAD

# a bent C-C-O-H piece, far from the origin and turned: the frame must be kept
FRAG_Z = np.array([6, 6, 8, 1])
FRAG_X = np.array([[0.0, 0.0, 0.0], [1.52, 0.0, 0.0], [2.05, 1.32, 0.0], [2.98, 1.30, 0.31]]) @ \
    random_rotation(2).numpy().T + np.array([7.0, -3.0, 11.0])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("micro", size_histogram={3: 1, 9: 2, 14: 1}, window=9)
    m = EAD(cfg, device="cpu")
    for blk in m.denoiser.egnn.blocks:   # non-trivial dynamics for an untrained net
        torch.nn.init.normal_(blk.coord_out.weight, std=0.05)
    return m


@pytest.mark.parametrize("sampler", ["synchronous", "manual", "adaptive"])
def test_fragment_is_kept_with_every_sampler(model, sampler):
    times = []
    mols, settings = model.sample_arrays(3, sampler=sampler, steps=40, seed=1, num_atoms=[7, 9, 12],
                                         fragment=(FRAG_X, FRAG_Z),
                                         on_step=lambda i, t, zx, zh: times.append(t.clone()))
    assert [len(z) for _, z in mols] == [7, 9, 12]
    for pos, z in mols:
        assert np.array_equal(z[:4], FRAG_Z)
        assert np.abs(pos[:4] - FRAG_X).max() < 1e-3
        assert np.isfinite(pos).all()
    held = torch.cat([torch.arange(4) + s for s in (0, 7, 16)])
    free = torch.ones(28, dtype=torch.bool)
    free[held] = False
    assert all(int(t[held].max()) == 0 for t in times)            # held at t = 0 throughout
    assert int(times[0][free].min()) == model.config.timesteps     # the others start in the noise
    assert int(times[-1].max()) == 0
    if sampler != "synchronous":   # the free atoms keep their ±C window, not pulled to the held ones
        spread = max(int(t[free].max() - t[free].min()) for t in times)
        assert spread <= 2 * model.config.window
        assert any(int(t[free].max()) > 4 * model.config.window for t in times[10:])


def test_adaptive_sampler_paces_on_free_atoms_only(model):
    """Held atoms are at t = 0: if they counted as the leader, every free atom would be pulled to
    2C right after the warm-up; instead the asynchronous phase takes its usual ~steps/2 calls."""
    _, s = model.sample_arrays(2, steps=50, seed=0, num_atoms=9, sampler="adaptive",
                               fragment=(FRAG_X, FRAG_Z))
    assert s["network_calls"] >= 45


def test_fragment_growth_is_equivariant(model):
    """Rotating and moving the fragment (and the initial noise with it) rotates and moves the
    completion, with the per-step noise off; float64 for a tight tolerance."""
    torch.set_default_dtype(torch.float64)
    try:
        m = EAD(model.config, model.denoiser.double(), device="cpu")
        n = torch.tensor([8, 11])
        frag = Fragment(FRAG_X, FRAG_Z)
        g = torch.Generator().manual_seed(3)
        zx = torch.randn(19, 3, generator=g)
        zh = torch.randn(19, m.config.num_features, generator=g)
        R, shift = random_rotation(5), torch.tensor([-4.0, 2.0, 9.0])
        runs = []
        for f, x0 in ((frag, zx), (Fragment(FRAG_X @ R.numpy().T + shift.numpy(), FRAG_Z), zx @ R.T)):
            for name in ("adaptive", "manual"):
                held = FixedAtoms(*f.held_atoms(n, m.encoder.encode))
                sched = m.make_schedule(name, steps=40, t_async=600)
                runs.append(run_sampler(m._denoise, m.noise, sched, n, m.config.num_features, 5,
                                        torch.Generator().manual_seed(0), z_init=(x0, zh),
                                        dtype=torch.float64, noise_scale=0.0, fixed=held))
        for a, b in ((runs[0], runs[2]), (runs[1], runs[3])):
            assert torch.allclose(b.positions, a.positions @ R.T + shift, atol=1e-6)
            assert torch.equal(a.atom_index, b.atom_index)
    finally:
        torch.set_default_dtype(torch.float32)
        model.denoiser.float()


def test_fragment_from_rdkit_molecule_and_files(model, tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    x = mol.GetConformer().GetPositions()
    out = model.sample(2, steps=20, seed=0, fragment=mol, num_atoms=12)
    for m in out:
        assert [a.GetAtomicNum() for a in m.GetAtoms()][:9] == z.tolist()
        assert np.abs(m.GetConformer().GetPositions()[:9] - x).max() < 1e-3
    write_sdf(tmp_path / "f.sdf", [(x, z)])
    write_xyz(tmp_path / "f.xyz", [(x, z)])
    for path in (tmp_path / "f.sdf", str(tmp_path / "f.xyz")):
        f = load_fragment(path)
        assert np.allclose(f.positions, x, atol=1e-4) and np.array_equal(f.atomic_numbers, z)


def test_bad_fragments(model, tmp_path):
    flat = Chem.MolFromSmiles("c1ccccc1O")
    with pytest.raises(EADError, match="no coordinates"):
        load_fragment(flat)
    AllChem.Compute2DCoords(flat)
    with pytest.raises(EADError, match="2D"):
        load_fragment(flat)
    with pytest.raises(EADError, match="no atoms"):
        load_fragment((np.zeros((0, 3)), np.zeros(0, dtype=int)))
    with pytest.raises(EADError, match="element S"):
        model.sample_arrays(1, steps=5, num_atoms=9, fragment=(FRAG_X, [6, 16, 8, 1]))
    with pytest.raises(EADError, match="must have more"):
        model.sample_arrays(1, steps=5, num_atoms=4, fragment=(FRAG_X, FRAG_Z))
    sizes, _ = model.sample_arrays(20, steps=2, seed=0, fragment=(FRAG_X, FRAG_Z))
    assert min(len(z) for _, z in sizes) > 4       # p(M) above the fragment's size


def test_cli_fragment(model, tmp_path, capsys):
    folder = model.save_pretrained(tmp_path / "m")
    write_sdf(tmp_path / "f.sdf", [(FRAG_X, FRAG_Z)])
    write_xyz(tmp_path / "bad.xyz", [(FRAG_X, [6, 6, 8, 17])])
    out = tmp_path / "grown.sdf"
    assert main(["sample", "--model", str(folder), "-n", "2", "--steps", "10", "--fragment",
                 str(tmp_path / "f.sdf"), "--add", "5", "-o", str(out), "--quiet"]) == 0
    suppl = Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False)
    for m in suppl:
        assert m.GetNumAtoms() == 9
        assert np.abs(m.GetConformer().GetPositions()[:4] - FRAG_X).max() < 1e-3
    capsys.readouterr()
    for argv, message in (
        (["--fragment", str(tmp_path / "bad.xyz"), "--add", "2"], "element Cl"),
        (["--fragment", str(tmp_path / "f.sdf"), "--num-atoms", "3"], "must have more"),
        (["--fragment", str(tmp_path / "f.sdf"), "--num-atoms", "9", "--add", "2"], "not both"),
        (["--add", "2"], "needs --fragment"),
        (["--fragment", str(tmp_path / "missing.sdf")], "no such file"),
    ):
        target = tmp_path / "never.sdf"
        assert main(["sample", "--model", str(folder), "-n", "1", "--steps", "3", "-o", str(target),
                     "--quiet", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ead: error:") and message in err[0], err
        assert not target.exists()


# ------------------------------------------------------------------ training with held atoms
def _batch(n=6):
    from ead.data.batch import FeatureEncoder, collate
    from ead.data.qm9 import qm9_split

    valid = qm9_split("valid")
    return collate(valid, np.arange(n), FeatureEncoder((1, 6, 7, 8, 9)))


def test_held_atoms_get_t0_clean_inputs_and_no_loss():
    from ead.data.bonds import bond_matrix
    from ead.diffusion.loss import TrainingWindow, diffusion_loss, held_fragments
    from ead.diffusion.noise import NoiseSchedule

    batch = _batch()
    held = held_fragments(batch, 1.0, torch.Generator().manual_seed(0))
    start = 0
    for n in batch.num_atoms.tolist():   # every molecule: 1 … n−1 atoms, bonded to each other
        idx = np.flatnonzero(held[start : start + n].numpy())
        assert 1 <= len(idx) < n
        bonded = bond_matrix(batch.x[start : start + n].numpy(), batch.atomic_numbers[start : start + n].numpy()) > 0
        reach = {int(idx[0])}
        for _ in range(n):
            reach |= {int(j) for i in reach for j in np.flatnonzero(bonded[i]) if j in idx}
        assert reach == set(idx.tolist())
        start += n
    assert not held_fragments(batch, 1e-9, torch.Generator().manual_seed(0)).any()

    seen = {}

    def net(z_x, z_h, time, mol, B, edges, context):
        seen.update(z_x=z_x, z_h=z_h, time=time)
        return torch.zeros_like(z_x), torch.zeros_like(z_h)

    noise = NoiseSchedule("polynomial_2", 1000)
    window = TrainingWindow(1000, 9)
    diffusion_loss(net, noise, window, batch, torch.Generator().manual_seed(4), fragment_share=1.0)
    held = held_fragments(batch, 1.0, torch.Generator().manual_seed(4))
    assert (seen["time"][held] == 0).all() and (seen["time"][~held] > 0).any()
    assert torch.equal(seen["z_h"][held], batch.h[held])      # clean features
    for m in range(batch.num_molecules):   # clean coordinates, up to the molecule's centring shift
        d = (seen["z_x"] - batch.x)[held & (batch.mol == m)]
        assert torch.allclose(d, d[:1].expand_as(d), atol=1e-5)

    # the loss ignores the held atoms: a network exact on the free atoms and wrong on the held
    # ones has zero loss
    def oracle(eps):
        def f(z_x, z_h, time, mol, B, edges, context):
            wrong = held.unsqueeze(-1).to(z_x.dtype) * 7.0
            return eps[0] + wrong, eps[1] + wrong
        return f

    g = torch.Generator().manual_seed(4)
    held_again = held_fragments(batch, 1.0, g)
    t = window.sample(batch.mol, batch.num_molecules, g).masked_fill(held_again, 0)
    _, _, ex, eh = noise.add_noise(batch.x, batch.h, t, batch.mol, batch.num_molecules, g, clean=held_again)
    loss = diffusion_loss(oracle((ex, eh)), noise, window, batch, torch.Generator().manual_seed(4),
                          fragment_share=1.0)
    assert float(loss) == 0.0


def test_fragment_share_run_resumes_exactly_and_changes_training(tmp_path, capsys):
    from safetensors.torch import load_file

    from ead.train import Checkpointer, TrainConfig, train

    def cfg(path, **kw):
        return TrainConfig(**{**dict(run_dir=str(path), preset="micro", limit_molecules=16, batch_size=8,
                                     lr=1e-3, max_steps=6, val_every=0, ckpt_every=3, log_every=3,
                                     quiet=True, threads=1, fragment_share=0.5), **kw})

    train(cfg(tmp_path / "a"))
    train(cfg(tmp_path / "b", max_steps=3))
    assert train(cfg(tmp_path / "b"))["start_step"] == 3
    train(cfg(tmp_path / "off", fragment_share=0.0))
    state = {k: load_file(str(Checkpointer(tmp_path / k).latest() / "state.safetensors")) for k in ("a", "b", "off")}
    assert all(torch.equal(state["a"][k], state["b"][k]) for k in state["a"])
    assert any(not torch.equal(state["a"][k], state["off"][k]) for k in state["a"] if k.startswith("model."))
    # the exported card says the model has seen held fragments (EDM's recipe leaves no entry)
    cards = {k: json.loads((tmp_path / k / "model" / "config.json").read_text())["card"] for k in ("a", "off")}
    assert cards["a"]["recipe"] == {"fragment_share": 0.5} and "recipe" not in cards["off"]
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "a" / "model")]) == 0
    assert "training recipe: fragment_share 0.5 (grows fragments in distribution" in capsys.readouterr().out
    with pytest.raises(EADError, match="fragment-share"):
        train(cfg(tmp_path / "bad", fragment_share=1.5))


def test_models_not_trained_with_fragments_grow_them_without_the_corrector(model):
    from ead.pipeline import FRAGMENT_FALLBACK

    with_corrector = EAD(model.config, device="cpu", sampler_defaults={"steps": 32, "corrector_steps": 2})
    assert with_corrector.fragment_options({}) == FRAGMENT_FALLBACK
    assert with_corrector.fragment_options({"sampler": "manual", "window": 4}) == \
        {"sampler": "manual", "window": 4, **FRAGMENT_FALLBACK}
    for given in ({"corrector_steps": 1}, {"steps": 50}, {"update": "ancestral"}):   # the call's own setting wins
        assert with_corrector.fragment_options(given) == given
    assert model.fragment_options({}) == {}   # no corrector in its defaults: nothing to replace
    trained = EAD(model.config, device="cpu", sampler_defaults={"steps": 32, "corrector_steps": 2},
                  card={"recipe": {"fragment_share": 0.25}})
    assert trained.trained_with_fragments and trained.fragment_options({}) == {}
    _, settings = next(with_corrector.sample_batches(1, seed=0, num_atoms=6, fragment=(FRAG_X, FRAG_Z)))
    assert (settings["steps"], settings["update"], settings.get("corrector_steps", 0)) == (100, "sde-dpm2m", 0)
    _, settings = next(with_corrector.sample_batches(1, seed=0, num_atoms=6))
    assert (settings["steps"], settings["corrector_steps"]) == (32, 2)


@pytest.mark.skipif("qm9" not in __import__("ead.pipeline").pipeline.available_models(), reason="no shipped model")
def test_cli_hints_at_the_corrector_when_fragment_trajectories_diverge(tmp_path, capsys):
    # the shipped model was not trained with held fragments: asked for its corrector, most fragment
    # trajectories diverge (docs/fragments.md: 76 % of QM9 fragments) and the warning names the way
    # out; by default it grows fragments without the corrector and no hint is given
    write_sdf(tmp_path / "f.sdf", [(FRAG_X, FRAG_Z)])
    base = ["sample", "--model", "qm9", "-n", "8", "--fragment", str(tmp_path / "f.sdf"), "--add", "8", "--seed", "0",
            "-o", str(tmp_path / "g.sdf"), "--threads", "1"]
    # (the corrector after every move, as the earlier default had it)
    assert main(base + ["--quiet", "--steps", "32", "--corrector-steps", "2", "--corrector-below", "1000"]) == 0
    err = capsys.readouterr().err
    assert "diverged" in err and "hint:" in err and "--corrector-steps 0" in err
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "hint:" not in err and "100 steps" in err


@pytest.mark.skipif("qm9-fragment" not in __import__("ead.pipeline").pipeline.available_models(),
                    reason="no shipped fragment model")
def test_shipped_fragment_model_is_the_default_for_growing(tmp_path, capsys):
    # the package's fragment-trained model says so in its card, samples with the sampler its
    # fragment results were measured with (the qm9 model's earlier default: a corrector after every
    # move; docs/fragments.md), and is what `ead sample --fragment` uses without --model
    grower = EAD.from_pretrained("qm9-fragment")
    assert grower.trained_with_fragments and not EAD.from_pretrained("qm9").trained_with_fragments
    qm9 = EAD.from_pretrained("qm9").sampler_defaults
    earlier = {k: v for k, v in qm9.items() if k != "corrector_below"} | {"steps": 32, "corrector_steps": 2}
    assert grower.sampler_defaults == earlier
    write_sdf(tmp_path / "f.sdf", [(FRAG_X, FRAG_Z)])
    out = tmp_path / "g.sdf"
    assert main(["sample", "-n", "4", "--fragment", str(tmp_path / "f.sdf"), "--add", "8", "--seed", "0",
                 "-o", str(out), "--threads", "1"]) == 0
    assert "model qm9-fragment" in capsys.readouterr().err
    records = Chem.SDMolSupplier(str(out), removeHs=False, sanitize=False)
    for rec in records:
        pos = rec.GetConformer().GetPositions()
        assert rec.GetNumAtoms() == len(FRAG_Z) + 8
        assert np.abs(pos[: len(FRAG_Z)] - FRAG_X).max() < 1e-3
        assert [a.GetAtomicNum() for a in rec.GetAtoms()][: len(FRAG_Z)] == FRAG_Z.tolist()
