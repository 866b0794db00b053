"""Trajectories, pictures, the offline viewer and the asynchrony analysis (issue 6).

The models here are untrained micro networks: what is tested is the plumbing (what is recorded,
what is drawn, what the statistics say about trajectories whose answer is known), not chemistry."""

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import micro_ead
from ead import EADError
from ead.cli import main
from ead.data.files import read_molecules, write_sdf
from ead.pipeline import EAD
from ead.viz.analysis import analyse, markdown, plot_asynchrony, ring_atoms, sign_test
from ead.viz.render import plot_times, render_gif
from ead.viz.trajectory import (MoleculeTrajectory, TrajectoryRecorder, load_trajectories,
                                record_trajectories, save_trajectories)
from ead.viz.view import describe, view_file

ROOT = Path(__file__).resolve().parents[1]
SIZES = {5: 1, 7: 2}  # small molecules keep every test fast


@pytest.fixture(scope="module")
def micro_model():
    return micro_ead(SIZES)


@pytest.fixture(scope="module")
def model_dir(micro_model, tmp_path_factory):
    return str(micro_model.save_pretrained(tmp_path_factory.mktemp("viz") / "model"))


@pytest.fixture(scope="module")
def molecules(qm9_train):
    """A few QM9 molecules (valid, with rings and chains) and one impossible one: a carbon with
    six hydrogens 1 Å away."""
    mols = [qm9_train.molecule(i) for i in range(30, 36)]
    h6 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
    bad = (np.vstack([[0.0, 0.0, 0.0], h6]), np.array([6, 1, 1, 1, 1, 1, 1]))
    return mols, bad


# ---------------------------------------------------------------------------------- recording
def test_recorder_keeps_first_k_molecules_across_batches(micro_model):
    # K = 3 spans two batches of 2: the recorder must pick up where the first batch ended
    trajs = record_trajectories(micro_model, 5, molecules=3, steps=12, seed=4, batch_size=2)
    arrays, _ = micro_model.sample_arrays(5, sampler="adaptive", steps=12, seed=4, batch_size=2)
    assert len(trajs) == 3
    T, C = micro_model.config.timesteps, micro_model.config.window
    for tr, (pos, z) in zip(trajs, arrays[:3]):
        assert tr.atomic_numbers.tolist() == z.tolist()           # decoded from the final result
        np.testing.assert_allclose(tr.final_positions, pos, atol=1e-5)
        S, m = tr.times.shape
        assert tr.positions.shape == (S, m, 3) and len(tr.iterations) == S
        assert (tr.times[0] == T).all() and (tr.times[-1] == 0).all()
        assert (np.diff(tr.times.astype(int), axis=0) <= 0).all()  # times never go back up
        assert (tr.lag() <= 2 * C).all()                           # the 2C window holds
        assert tr.settings["sampler"] == "adaptive" and tr.settings["steps"] == 12
        order = tr.finish_order()
        assert (np.diff(tr.finish_index()[order]) >= 0).all()


def test_recorder_memory_is_bounded_by_k():
    rec = TrajectoryRecorder(molecules=2, atom_types=(1, 6), timesteps=1000, max_atoms=9)
    t = torch.full((500,), 1000)
    rec(0, t, torch.zeros(500, 3), torch.zeros(500, 3))
    assert rec.buffered_atoms == 18  # 2 molecules × at most 9 atoms, not the batch's 500
    with pytest.raises(EADError):
        TrajectoryRecorder(molecules=0, atom_types=(1,), timesteps=10)


def test_npz_round_trip_needs_no_pickle(micro_model, tmp_path):
    trajs = record_trajectories(micro_model, 2, steps=8, seed=1)
    trajs[1].positions = None  # a times-only record must survive too
    path = save_trajectories(tmp_path / "t.npz", trajs, {"note": "test"})
    with np.load(path, allow_pickle=False) as data:  # would raise on any object array
        assert json.loads(str(data["meta"]))["note"] == "test"
    back = load_trajectories(path)
    for a, b in zip(trajs, back):
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
        assert (a.positions is None) == (b.positions is None)
        assert b.settings == a.settings
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(EADError, match="corrupt"):
        load_trajectories(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", meta=np.array('{"format": "x"}'))
    with pytest.raises(EADError, match="not an EAD trajectory"):
        load_trajectories(tmp_path / "other.npz")


def test_gif_and_heat_map(micro_model, tmp_path):
    tr = record_trajectories(micro_model, 1, steps=30, seed=2, num_atoms=7)[0]
    gif = render_gif(tr, tmp_path / "m.gif", frames=10, size=160, spin_frames=4)
    with Image.open(gif) as im:
        assert im.is_animated and im.n_frames == 10 + 4 and im.size == (160, 160)
        first = np.asarray(im.convert("RGB"), dtype=float)
        im.seek(9)
        last = np.asarray(im.convert("RGB"), dtype=float)
    assert first.std() > 5 and last.std() > 5     # something is drawn
    assert np.abs(first - last).mean() > 0.5      # and it moves
    png = plot_times(tr, tmp_path / "m.png")
    with Image.open(png) as im:
        assert im.size[0] > 600 and np.asarray(im.convert("L")).std() > 10


# ---------------------------------------------------------------------------------- analysis
def _synthetic(positions, z, ahead, delay=8, steps=25, T=100):
    """A trajectory in which the `ahead` atoms run `delay` time steps in front of the others."""
    k = np.arange(steps)[:, None]
    t = np.clip(T - 5 * k + np.where(ahead, 0, delay)[None, :], 0, T)
    t[0] = T
    return MoleculeTrajectory(np.arange(steps, dtype=np.int32), t.astype(np.int16), None, np.asarray(z),
                              np.asarray(positions, dtype=np.float32), T, {"sampler": "synthetic"})


def _ring_and_chain(qm9_train):
    for i in range(200):
        pos, z = qm9_train.molecule(i)
        ring, valid = ring_atoms(pos, z)
        heavy = z > 1
        if valid and (ring & heavy).any() and (~ring & heavy).any():
            return pos, z, ring
    pytest.fail("no QM9 molecule with ring and chain atoms among the first 200")


def test_analysis_finds_the_planted_order(qm9_train, tmp_path):
    pos, z, ring = _ring_and_chain(qm9_train)
    heavy_first = [_synthetic(pos, z, z > 1) for _ in range(7)]
    res = analyse(heavy_first)
    r = res["heavy_before_h"]["mean_offset"]["all"]
    assert r["molecules"] == 7 and r["mean"] > 0 and r["positive"] == 1.0 and r["p_sign"] < 0.05
    assert res["heavy_before_h"]["finish_rank"]["all"]["mean"] > 0
    assert "**yes**" in markdown(res).split("**Do ring")[0]
    ring_first = [_synthetic(pos, z, ring) for _ in range(7)]
    res = analyse(ring_first)
    r = res["ring_before_chain"]["mean_offset"]["valid"]
    assert r["molecules"] == 7 and r["mean"] > 0 and r["p_sign"] < 0.05
    # nobody ahead: no difference to find
    flat = analyse([_synthetic(pos, z, np.ones(len(z), bool)) for _ in range(3)])
    assert flat["asynchronous_molecules"] == 0
    assert flat["heavy_before_h"]["mean_offset"]["all"]["molecules"] == 0
    plot_asynchrony(heavy_first, analyse(heavy_first), tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_sign_test():
    assert sign_test(np.ones(10)) == pytest.approx(2 / 2**10)
    assert sign_test(np.array([1.0, -1.0])) == 1.0
    assert sign_test(np.zeros(4)) == 1.0


def test_asynchrony_script_runs_and_rewrites_the_doc(model_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("asynchrony_bench", ROOT / "benchmarks" / "asynchrony.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{bench.BEGIN}\nold numbers\n{bench.END}\noutro\n")
    assert bench.main(["--model", model_dir, "-n", "6", "--steps", "20", "--batch-size", "6",
                       "--figures", str(tmp_path / "fig"), "--update-doc", str(doc),
                       "--save", str(tmp_path / "t.npz")]) == 0
    text = doc.read_text()
    assert "old numbers" not in text and text.startswith("intro") and text.endswith("outro\n")
    assert "Provisional" in text and "(fig/asynchrony.png)" in text and "heavy atoms" in text
    first = json.loads((tmp_path / "fig" / "asynchrony.json").read_text())
    assert first["molecules"] == 6
    # re-analysing the saved times gives the same numbers without sampling again
    assert bench.main(["--model", model_dir, "--load", str(tmp_path / "t.npz"),
                       "--figures", str(tmp_path / "fig")]) == 0
    assert json.loads((tmp_path / "fig" / "asynchrony.json").read_text()) == first


# ---------------------------------------------------------------------------------- viewer
def test_describe_validity_and_smiles(molecules):
    mols, bad = molecules
    infos = [describe(p, z, k) for k, (p, z) in enumerate(mols)]
    assert all(i.valid for i in infos) and all("[H]" not in i.smiles for i in infos)
    b = describe(*bad)
    assert not b.valid and b.formula == "CH6"


def test_view_file_writes_png_and_self_contained_html(molecules, tmp_path):
    mols, bad = molecules
    sdf = tmp_path / "mix.sdf"
    names = [f"qm9 {k}" for k in range(len(mols))] + ["</script><script>alert(1)</script>"]
    write_sdf(sdf, mols + [bad], names=names)
    res = view_file(sdf, columns=3)
    assert res["shown"] == 7 and res["valid"] == 6 and res["skipped"] == 0
    png, page = res["files"]
    assert png == tmp_path / "mix.png" and page == tmp_path / "mix.html"
    with Image.open(png) as im:
        assert im.size[0] == 3 * 260 and im.size[1] > 3 * 260       # 3 rows of 3, with captions
        assert np.asarray(im.convert("L")).std() > 10
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and " src=" not in html   # nothing to fetch
    assert "<script>alert(1)" not in html        # a name from the file cannot inject markup
    data = html.split('id="ead-data">')[1].split("</script>")[0]
    payload = json.loads(data)
    assert [m["valid"] for m in payload["molecules"]] == [True] * 6 + [False]
    assert payload["molecules"][6]["name"] == names[6]
    # --max-molecules and an explicit prefix
    res = view_file(sdf, tmp_path / "two", max_molecules=2)
    assert res["shown"] == 2 and (tmp_path / "two.png").exists() and (tmp_path / "two.html").exists()


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs headless Chromium (Debian package chromium)")
def test_html_renders_offline_in_headless_chromium(molecules, tmp_path):
    mols, _ = molecules
    oxygenated = [m for m in mols if (m[1] == 8).any()][:2]
    assert oxygenated, "test data needs a molecule with oxygen (drawn red)"
    sdf = tmp_path / "o.sdf"
    write_sdf(sdf, oxygenated)
    page = view_file(sdf, tmp_path / "o", png=False)["files"][0]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--host-resolver-rules=MAP * ~NOTFOUND",   # any fetch would fail: the page must not need one
             "--window-size=900,700"]
    url = page.resolve().as_uri()
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert 'data-rendered="2"' in dom.stdout, dom.stderr[-2000:]      # the viewer script ran
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert rgb.std() > 20, "blank screenshot"
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > 150) & (g < 90) & (b < 90)        # oxygen spheres: the 3D views were drawn
    assert red.sum() > 100, f"only {red.sum()} red pixels"


# ---------------------------------------------------------------------------------- the CLI
def test_cli_sample_with_trajectory(model_dir, tmp_path, capsys):
    out, traj = tmp_path / "s.sdf", tmp_path / "traj"
    rc = main(["sample", "--model", model_dir, "-n", "3", "--steps", "12", "-o", str(out), "--device", "cpu",
               "--trajectory", str(traj), "--trajectory-molecules", "2", "--batch-size", "2", "--quiet"])
    assert rc == 0 and capsys.readouterr().out == ""
    names = sorted(p.name for p in traj.iterdir())
    assert names == ["molecule_00.gif", "molecule_00_times.png", "molecule_01.gif",
                     "molecule_01_times.png", "trajectory.npz"]
    trajs = load_trajectories(traj / "trajectory.npz")
    written = read_molecules(out).molecules
    assert len(trajs) == 2 and len(written) == 3
    for tr, (pos, z) in zip(trajs, written):
        assert tr.atomic_numbers.tolist() == z.tolist()
        np.testing.assert_allclose(tr.final_positions, pos, atol=1e-3)   # SDF keeps 4 decimals


def test_cli_view_and_errors(model_dir, molecules, tmp_path, capsys, busy_machine):
    mols, bad = molecules
    write_sdf(tmp_path / "m.sdf", mols[:2] + [bad])
    assert main(["view", str(tmp_path / "m.sdf"), "-o", str(tmp_path / "pics")]) == 0
    captured = capsys.readouterr()
    assert "drew 3 of 3 molecules (2 valid)" in captured.err and captured.out == ""
    assert (tmp_path / "pics.png").exists() and (tmp_path / "pics.html").exists()

    def fails(argv, match):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err

    fails(["view", str(tmp_path / "missing.sdf")], "no such file")
    (tmp_path / "empty.sdf").write_text("")
    fails(["view", str(tmp_path / "empty.sdf")], "no molecules")
    (tmp_path / "plain").write_text("")
    fails(["view", str(tmp_path / "m.sdf"), "-o", str(tmp_path / "plain" / "x")], "cannot make the output folder")
    assert main(["view", str(tmp_path / "m.sdf"), "-o", str(tmp_path / "a" / "b" / "c"), "--quiet"]) == 0
    assert (tmp_path / "a" / "b" / "c.png").exists() and (tmp_path / "a" / "b" / "c.html").exists()
    fails(["view", str(tmp_path / "m.sdf"), "--columns", "0"], "positive integer")
    fails(["sample", "--model", model_dir, "-n", "1", "-o", str(tmp_path / "a.sdf"),
           "--trajectory", str(tmp_path / "m.sdf")], "not a folder")
    assert not (tmp_path / "a.sdf").exists()   # failed before sampling, nothing written


def test_help_texts(capsys):
    assert main(["sample", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--trajectory DIR" in text and "--trajectory-molecules K" in text and "(default 4)" in text
    assert main(["view", "--help"]) == 0
    text = capsys.readouterr().out
    assert "OUT_PREFIX" in text and "offline" in text
    assert main(["--help"]) == 0
    assert "view" in capsys.readouterr().out
