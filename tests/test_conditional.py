"""Conditional generation (docs/method.md §9): properties as context, in training and in sampling."""

import numpy as np
import pytest
import torch

from ead import EADError
from ead.cli import main
from ead.model.config import ModelConfig
from ead.data.files import read_molecules, write_sdf
from ead.data.properties import (context_stats, draw_targets, parse_conditions, resolve_targets,
                                 size_quantiles)
from ead.pipeline import EAD
from ead.train import TrainConfig, train
from ead.train.data import context_array


def test_stats_and_quantiles_follow_the_data():
    rng = np.random.default_rng(0)
    sizes = np.repeat([5, 9], 4000)
    values = np.concatenate([rng.normal(10, 2, 4000), rng.normal(50, 5, 4000)])[:, None]
    mean, mad = context_stats(values)
    assert mean[0] == pytest.approx(30.0, abs=0.3)
    assert mad[0] == pytest.approx(np.abs(values - values.mean()).mean())
    q = size_quantiles(sizes, values)
    drawn = draw_targets(q, torch.tensor([5] * 3000 + [9] * 3000 + [7] * 10), torch.Generator().manual_seed(0))
    assert drawn[:3000].mean() == pytest.approx(10, abs=0.2) and drawn[:3000].std() == pytest.approx(2, abs=0.15)
    assert drawn[3000:6000].mean() == pytest.approx(50, abs=0.5)
    assert values[sizes == 5].min() <= drawn[:3000].min() and drawn[:3000].max() <= values[sizes == 5].max()
    assert len(np.unique(np.round(drawn[6000:], 6))) == 10   # size 7 is absent: the nearest size's table


def test_conditions_parse_and_resolve_with_clear_errors():
    assert parse_conditions(["alpha=80", "gap = 6000"]) == {"alpha": 80.0, "gap": 6000.0}
    for bad in (["alpha"], ["alpha=x"], ["=3"], ["alpha=nan"]):
        with pytest.raises(EADError, match="NAME=VALUE"):
            parse_conditions(bad)
    cfg = ModelConfig(context=("alpha", "gap"), context_mean=(75.0, 6800.0), context_mad=(6.0, 1000.0),
                      context_quantiles={9: [[60.0, 70.0, 80.0], [5000.0, 6000.0, 7000.0]]})
    gen = torch.Generator().manual_seed(0)
    t = resolve_targets(cfg, torch.tensor([9, 9, 9]), {"alpha": 81.5}, gen)
    assert t.shape == (3, 2) and (t[:, 0] == 81.5).all() and ((5000 <= t[:, 1]) & (t[:, 1] <= 7000)).all()
    t = resolve_targets(cfg, torch.tensor([9, 9]), {"alpha": [1.0, 2.0], "gap": 3.0}, gen)
    assert t.tolist() == [[1.0, 3.0], [2.0, 3.0]]
    with pytest.raises(EADError, match="conditioned on alpha, gap, not mu"):
        resolve_targets(cfg, torch.tensor([9]), {"mu": 1.0}, gen)
    with pytest.raises(EADError, match="one value or one per molecule"):
        resolve_targets(cfg, torch.tensor([9, 9, 9]), {"alpha": [1.0, 2.0]}, gen)
    with pytest.raises(EADError, match="unconditional"):
        resolve_targets(ModelConfig(), torch.tensor([9]), {"alpha": 1.0}, gen)
    assert resolve_targets(ModelConfig(), torch.tensor([9]), None, gen) is None
    with pytest.raises(EADError, match="one entry per property"):
        ModelConfig(context=("alpha",))


def test_a_fixed_target_draws_the_sizes_that_carry_it():
    """p(M | value) from the stored quantiles: size 5 holds α in [10, 20], size 9 in [50, 60]."""
    from ead.data.properties import sizes_given_targets

    cfg = ModelConfig(context=("alpha",), context_mean=(35.0,), context_mad=(20.0,),
                      size_histogram={5: 1, 9: 3},
                      context_quantiles={5: [list(np.linspace(10, 20, 65))], 9: [list(np.linspace(50, 60, 65))]})
    gen = torch.Generator().manual_seed(0)
    assert set(sizes_given_targets(cfg, {"alpha": 15.0}, 50, gen).tolist()) == {5}
    assert set(sizes_given_targets(cfg, {"alpha": 55.0}, 50, gen).tolist()) == {9}
    assert sizes_given_targets(cfg, {"alpha": [12.0, 58.0, 19.0]}, 3, gen).tolist() == [5, 9, 5]
    between = sizes_given_targets(cfg, {"alpha": 31.0}, 400, gen)   # in neither range: nearer is likelier
    assert set(between.tolist()) == {5, 9} and (between == 5).float().mean() > 0.25
    above = sizes_given_targets(cfg, {"alpha": 200.0}, 400, gen)   # far above both: mostly the top size
    assert (above == 9).float().mean() > 0.9
    assert set(sizes_given_targets(cfg, {"alpha": 1e9}, 20, gen).tolist()) <= {5, 9}   # no NaN weights


@pytest.fixture(scope="module")
def cond_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "run"
    cfg = TrainConfig(run_dir=str(run), preset="micro", condition=("alpha",), limit_molecules=32,
                      batch_size=8, max_steps=4, val_every=4, val_molecules=16, ckpt_every=4,
                      log_every=2, quiet=True, threads=1, accelerator="cpu")
    train(cfg)
    return run


def test_conditional_training_on_qm9_second_half(cond_model):
    from ead.data.qm9 import conditional_halves, qm9_split

    model = EAD.from_pretrained(cond_model / "model")
    cfg = model.config
    assert cfg.context == ("alpha",) and model.denoiser.context_features == 1
    # normalisation and the size tables come from the 32 molecules trained on: EDM's generator half
    half = qm9_split("train").subset(np.sort(conditional_halves()["second"])[:32])
    alpha = half.properties[:, half.property_names.index("alpha")]
    assert cfg.context_mean[0] == pytest.approx(alpha.mean(), rel=1e-6)
    assert cfg.context_mad[0] == pytest.approx(np.abs(alpha - alpha.mean()).mean(), rel=1e-6)
    assert set(cfg.context_quantiles) == set(cfg.size_histogram)
    ctx = context_array(half, cfg)
    assert ctx.shape == (32, 1) and abs(float(ctx.mean())) < 1e-5


def test_the_context_reaches_the_network(cond_model):
    model = EAD.from_pretrained(cond_model / "model")
    a = model.sample_arrays(3, steps=5, seed=1, condition={"alpha": 40.0}, size_from="marginal")[0]
    b = model.sample_arrays(3, steps=5, seed=1, condition={"alpha": 120.0}, size_from="marginal")[0]
    a2, settings = model.sample_arrays(3, steps=5, seed=1, condition={"alpha": 40.0}, size_from="marginal")
    assert [len(z) for _, z in a] == [len(z) for _, z in b]           # same seed, same sizes
    assert all(np.array_equal(p, q) for (p, _), (q, _) in zip(a, a2))  # reproducible
    assert not all(np.allclose(p, q) for (p, _), (q, _) in zip(a, b))  # the target changes the result
    assert settings["condition"] == {"alpha": [40.0, 40.0, 40.0]}


def test_cli_writes_targets_and_refuses_foreign_properties(cond_model, tmp_path, capsys):
    out = tmp_path / "c.sdf"
    assert main(["sample", "--model", str(cond_model / "model"), "-n", "3", "--steps", "5", "-o", str(out),
                 "--condition", "alpha=66.5", "--quiet"]) == 0
    res = read_molecules(out, strict=False)
    assert [p["alpha"] for p in res.properties] == ["66.5"] * 3
    drawn = tmp_path / "d.sdf"
    assert main(["sample", "--model", str(cond_model / "model"), "-n", "4", "--steps", "5", "-o", str(drawn),
                 "--quiet"]) == 0
    values = [float(p["alpha"]) for p in read_molecules(drawn, strict=False).properties]
    assert len(set(values)) == 4   # drawn per molecule when not given
    capsys.readouterr()
    assert main(["info", "--model", str(cond_model / "model")]) == 0
    assert "conditioned on: alpha" in capsys.readouterr().out
    assert main(["sample", "--model", str(cond_model / "model"), "-n", "2", "-o", str(out),
                 "--condition", "gap=5000"]) == 2
    assert "conditioned on alpha" in capsys.readouterr().err


def test_conditional_training_on_a_users_sdf_properties(tmp_path, qm9_train):
    mols = [qm9_train.molecule(i) for i in range(12)]
    path = tmp_path / "mine.sdf"
    write_sdf(path, mols, properties=[{"logS": str(-1.5 - 0.1 * i)} for i in range(12)])
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), data=str(path), preset="micro", condition=("logS",),
                      batch_size=4, max_steps=2, val_every=0, ckpt_every=2, log_every=1, quiet=True,
                      threads=1, accelerator="cpu")
    train(cfg)
    model = EAD.from_pretrained(tmp_path / "run" / "model")
    assert model.config.context == ("logS",) and -2.6 < model.config.context_mean[0] < -1.5
    bad = tmp_path / "bad.sdf"
    write_sdf(bad, mols[:4], properties=[{"logS": "1"}, {"logS": "n/a"}, {}, {}])
    with pytest.raises(EADError, match="molecule 1: property 'logS' is not a number"):
        train(TrainConfig(run_dir=str(tmp_path / "run2"), data=str(bad), preset="micro", condition=("logS",),
                          max_steps=1, quiet=True, threads=1, accelerator="cpu"))


# ------------------------------------------------------------------------------------ predictor
from ead.predictor import Predictor, PredictorTrainConfig, property_mae, train_predictor  # noqa: E402


@pytest.fixture(scope="module")
def predictor_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pred") / "run"
    cfg = PredictorTrainConfig(run_dir=str(run), property="alpha", layers=2, hidden=32, batch_size=32,
                               lr=2e-3, max_steps=200, val_every=0, ckpt_every=100, limit_molecules=128,
                               quiet=True, threads=1)
    return run, train_predictor(cfg)


def test_predictor_learns_its_training_molecules(predictor_run):
    """Predicting the mean scores MAE = MAD; 200 steps on 128 molecules get well below (measured 0.50 MAD)."""
    from ead.data.qm9 import conditional_halves, qm9_split

    run, summary = predictor_run
    pred = Predictor.from_pretrained(run / "model")
    mols = qm9_split("train").subset(np.sort(conditional_halves()["first"])[:128])
    alpha = mols.properties[:, mols.property_names.index("alpha")]
    mae = np.abs(pred.predict(mols) - alpha).mean()
    assert mae < 0.7 * np.abs(alpha - alpha.mean()).mean(), mae
    assert summary["step"] == 200 and summary["unit"] == "Bohr^3"
    assert pred.info["test_mae"] == pytest.approx(summary["test_mae"]) and pred.info["train_molecules"] == 128


def test_predictor_is_invariant(predictor_run, qm9_train):
    pred = Predictor.from_pretrained(predictor_run[0] / "model")
    pos, z = qm9_train.molecule(5)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    perm = np.random.default_rng(1).permutation(len(z))
    moved = [(pos, z), (pos @ q.T + 4.0, z), (pos[perm], z[perm])]
    out = pred.predict(moved)
    assert np.allclose(out, out[0], atol=1e-3), out


def test_predictor_resumes_and_refuses_another_property(predictor_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(predictor_run[0], run)
    more = PredictorTrainConfig(run_dir=str(run), property="alpha", layers=2, hidden=32, batch_size=32,
                                lr=2e-3, max_steps=210, val_every=0, ckpt_every=100, limit_molecules=128,
                                quiet=True, threads=1)
    assert train_predictor(more)["step"] == 210
    with pytest.raises(EADError, match="another run"):
        train_predictor(dataclasses_replace(more, property="gap"))


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_evaluate_reports_the_property_mae(predictor_run, tmp_path, capsys, qm9_train):
    import json

    pred = Predictor.from_pretrained(predictor_run[0] / "model")
    mols = [qm9_train.molecule(i) for i in range(20)]
    targets = np.linspace(60, 90, 20)
    path = tmp_path / "s.sdf"
    write_sdf(path, mols, properties=[{"alpha": f"{t:.6g}"} for t in targets])
    expect = property_mae(pred, mols, targets)
    assert expect["mae"] == pytest.approx(np.abs(pred.predict(mols) - targets).mean())
    assert main(["evaluate", str(path), "--reference", "none", "--json", "--predictor",
                 str(predictor_run[0] / "model")]) == 0
    got = json.loads(capsys.readouterr().out)["property"]
    assert got["mae"] == pytest.approx(expect["mae"], rel=1e-6) and got["num_molecules"] == 20
    # the references: the same predictions against shuffled targets; the size-only guess
    from ead.predictor import size_means

    sizes = np.array([len(z) for _, z in mols])
    guess = size_means("alpha", sizes)
    assert got["size_only_mae"] == pytest.approx(np.abs(targets - guess).mean())
    assert got["shuffled_mae"] is not None and got["shuffled_mae"] != got["mae"]
    # the intervals: around the MAE, and the paired difference from the size-only reference (the
    # command read the SDF's rounded coordinates: its predictions differ in the fifth digit)
    err, size_err = np.abs(pred.predict(mols) - targets), np.abs(targets - guess)
    lo, hi = got["mae_interval"]
    assert lo < got["mae"] < hi and hi - lo == pytest.approx(2 * 1.96 * err.std(ddof=1) / np.sqrt(20), rel=1e-3)
    d, dlo, dhi = got["vs_size_only"]
    assert d == pytest.approx(got["mae"] - got["size_only_mae"]) and dlo < d < dhi
    assert dhi - dlo == pytest.approx(2 * 1.96 * (err - size_err).std(ddof=1) / np.sqrt(20), rel=1e-3)
    # QM9's own α: the size-only guess is closer to it than to these arbitrary targets
    alpha = qm9_train.properties[:20, qm9_train.property_names.index("alpha")]
    assert np.abs(alpha - guess).mean() < np.abs(targets - guess).mean()
    write_sdf(tmp_path / "none.sdf", mols[:2])
    assert main(["evaluate", str(tmp_path / "none.sdf"), "--predictor", str(predictor_run[0] / "model")]) == 2
    assert "has no 'alpha' target" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "ead-predictor", "predictor": {"property": "alpha"}}')
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not safetensors")
    assert main(["evaluate", str(path), "--predictor", str(tmp_path / "bad")]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_xyz_comment_keys_are_read_back_as_properties(tmp_path, qm9_train):
    from ead.data.files import MoleculeWriter

    path = tmp_path / "m.xyz"
    with MoleculeWriter(path, metadata={"ead_seed": 3}) as w:
        w.write([qm9_train.molecule(0)], names=["mol0"], properties=[{"alpha": "71.25"}])
    props = read_molecules(path).properties[0]
    assert props["alpha"] == "71.25" and props["ead_seed"] == "3"


def test_an_unconditional_run_can_be_made_conditional(tmp_path):
    """--init-from an unconditional run: zero context columns, so the start is that model exactly."""
    base = dict(preset="micro", limit_molecules=16, batch_size=8, val_every=0, ckpt_every=2, log_every=1,
                quiet=True, threads=1, accelerator="cpu")
    train(TrainConfig(run_dir=str(tmp_path / "u"), max_steps=2, **base))
    train(TrainConfig(run_dir=str(tmp_path / "c"), max_steps=0, condition=("alpha",), condition_split="second",
                      init_from=str(tmp_path / "u"), **base))   # other molecules: p(M) may differ
    u = EAD.from_pretrained(tmp_path / "u" / "model")
    c = EAD.from_pretrained(tmp_path / "c" / "model")
    assert c.config.context == ("alpha",) and c.card["continues"][0]["run"] == str(tmp_path / "u")
    b = c.sample_arrays(2, steps=4, seed=0, num_atoms=[9, 14], condition={"alpha": 99.0})[0]
    a = u.sample_arrays(2, steps=4, seed=0, num_atoms=[9, 14])[0]
    assert all(np.allclose(p, q, atol=1e-5) for (p, _), (q, _) in zip(a, b))
    train(TrainConfig(run_dir=str(tmp_path / "c"), max_steps=2, condition=("alpha",), condition_split="second",
                      init_from=str(tmp_path / "u"), **base))   # and it trains on from there
    with pytest.raises(EADError, match="another model/data config"):
        train(TrainConfig(run_dir=str(tmp_path / "g"), max_steps=1, condition=("gap",), condition_split="all",
                          init_from=str(tmp_path / "c"), **base))
