"""Where users run it (issue 22): threads on a busy machine, progress that moves and stays off
stdout, the Python API's conventions, a fast `ead --help`, a light install, honest output for a
weak model. Micro untrained models keep it fast: the plumbing is tested, not chemistry."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import micro_ead
from ead import device as dev
from ead.cli import main
from ead.pipeline import EAD

SIZES = {4: 1, 6: 1}


@pytest.fixture(scope="module")
def micro():
    return micro_ead(SIZES)


@pytest.fixture(scope="module")
def micro_dir(micro, tmp_path_factory):
    return str(micro.save_pretrained(tmp_path_factory.mktemp("usability") / "model"))


# ------------------------------------------------------------------ startup
def test_help_and_version_do_not_load_torch():
    code = ("import sys, contextlib, io\nfrom ead.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    codes = [main(['--help']), main(['--version'])]\n"
            "assert codes == [0, 0] and 'sample' in out.getvalue() and 'ead 0.' in out.getvalue()\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_completion_still_sees_every_verbs_options(capsys):
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "--async-ratio" in out and "--posebusters" in out and "--threads" in out


# ------------------------------------------------------------------ threads
def test_thread_rule_leaves_out_busy_cpus():
    assert dev.default_threads(2, 0.0) == 2
    assert dev.default_threads(2, 0.3) == 2      # a flicker of activity takes no CPU
    assert dev.default_threads(2, 0.9) == 1      # another process on one core: one thread
    assert dev.default_threads(2, 2.0) == 1      # never fewer than one
    assert dev.default_threads(16, 3.0) == 13
    cpus = dev.usable_cpus()
    busy = dev.busy_cpus(cpus, 0.05)
    assert 0.0 <= busy <= len(cpus) + 0.01


def test_set_threads_says_what_the_rule_chose(monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dev, "usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(dev, "busy_cpus", lambda cpus, window=0.2: 1.0)
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 2)
    try:
        assert dev.set_threads() == 1 and torch.get_num_threads() == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "using 1 CPU thread of 2 cores" in err[0] and "--threads" in err[0]
        assert dev.set_threads(quiet=True) == 1 and capsys.readouterr().err == ""
        assert dev.set_threads(2) == 2 and capsys.readouterr().err == ""    # asked for: not repeated
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert dev.set_threads() == 1 and capsys.readouterr().err == ""     # the user's setting wins
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("verb", ["sample", "evaluate", "view", "bench", "predictor", "train"])
def test_every_verb_that_computes_takes_threads(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert "--threads" in capsys.readouterr().out


# ------------------------------------------------------------------ Python API
def test_seed_none_is_fresh_and_recorded(micro):
    a = micro.sample(2, steps=3)
    b = micro.sample(2, steps=3)
    seeds = {m.GetProp("ead_seed") for m in a} | {m.GetProp("ead_seed") for m in b}
    assert len(seeds) == 2                                  # one per call, the same on its molecules
    again = micro.sample(2, steps=3, seed=int(a[0].GetProp("ead_seed")))
    assert np.allclose(a[0].GetConformer().GetPositions(), again[0].GetConformer().GetPositions())
    assert [m.GetProp("_Name") for m in a] == ["ead_0", "ead_1"]   # as `ead sample` names them


def test_generator_gives_reproducible_seeds(micro):
    a = micro.sample(2, steps=3, generator=torch.Generator().manual_seed(7))
    b = micro.sample(2, steps=3, generator=torch.Generator().manual_seed(7))
    assert a[0].GetProp("ead_seed") == b[0].GetProp("ead_seed")
    with pytest.raises(TypeError, match="not both"):
        micro.sample(2, steps=3, seed=1, generator=torch.Generator())


@pytest.mark.parametrize("method", ["sample", "sample_arrays", "sample_batches"])
def test_unknown_keyword_names_the_public_method(micro, method):
    with pytest.raises(TypeError) as e:   # at the call: sample_batches' generator is never started
        getattr(micro, method)(2, steps=3, torch_dtype=torch.float32)
    msg = str(e.value)
    assert f"EAD.{method}()" in msg and "torch_dtype" in msg and ".to(device, dtype)" in msg
    assert "guide" in msg and "guidance" in msg and "generator" in msg and "async_ratio" in msg
    assert "Schedule" not in msg


def test_to_and_dtype(micro, micro_dir):
    m = EAD.from_pretrained(micro_dir, torch_dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16 and m.precision == "bf16"
    assert m.to(torch.float32) is m and m.precision is None
    assert m.to("cpu", dtype=torch.bfloat16).device.type == "cpu" and m.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="float32 or torch.bfloat16"):
        m.to(dtype=torch.float16)


def test_progress_counts_network_calls_and_molecules(micro, capsys):
    seen = []
    micro.sample_arrays(3, steps=4, seed=0, batch_size=2,
                        progress=lambda done, total, **f: seen.append((done, total, f["molecules"])))
    done = [s[0] for s in seen]
    assert done == list(range(1, len(seen) + 1))            # every network call, not every batch
    assert seen[-1][0] == seen[-1][1] and seen[-1][2] == 3   # ends at its total, all molecules done
    assert any(s[2] == 2 for s in seen)                     # the first batch counted as it ended
    micro.sample(2, steps=3, seed=0, progress=True)
    captured = capsys.readouterr()
    assert "sample 2" in captured.err and captured.out == ""


def test_saved_files_follow_the_umask(micro, tmp_path):
    old = os.umask(0o027)
    try:
        micro.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert modes == {"model.safetensors": 0o640, "config.json": 0o640}


# ------------------------------------------------------------------ command line
def test_sample_writes_gzip_and_keeps_progress_off_a_pipe(micro_dir, tmp_path, capsys):
    out = tmp_path / "s.sdf.gz"
    assert main(["sample", "--model", micro_dir, "-n", "3", "--steps", "3", "-o", str(out),
                 "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""                       # a pipe gets nothing: the molecules are in the file
    assert "wrote 3 molecules" in captured.err and "molecules=" not in captured.err   # no bar: no TTY
    with gzip.open(out, "rt") as f:
        assert f.read().count("$$$$") == 3
    assert main(["sample", "--model", micro_dir, "-n", "3", "--steps", "3", "-o", str(out),
                 "--threads", "1", "--progress"]) == 0
    assert "molecules=3" in capsys.readouterr().err
    assert main(["sample", "--model", micro_dir, "-n", "3", "--steps", "3", "-o", str(out),
                 "--threads", "1", "--progress", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["sample", "--model", micro_dir, "-o", str(tmp_path / "s.mol2")]) == 2
    assert "(optionally .gz)" in capsys.readouterr().err


def test_view_and_trajectory_pictures_show_progress_when_asked(micro_dir, tmp_path, capsys):
    sdf = tmp_path / "v.sdf"
    assert main(["sample", "--model", micro_dir, "-n", "2", "--steps", "3", "-o", str(sdf),
                 "--trajectory", str(tmp_path / "traj"), "--trajectory-molecules", "1",
                 "--progress", "--threads", "1"]) == 0
    assert "trajectory pictures" in capsys.readouterr().err
    assert main(["view", str(sdf), "--progress", "--quiet", "--threads", "1"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["view", str(sdf), "--progress", "--threads", "1"]) == 0
    assert "view" in capsys.readouterr().err


# ------------------------------------------------------------------ honest output
def test_a_degenerate_sample_is_flagged(capsys, tmp_path):
    from ead.data.files import write_sdf
    from ead.metrics.evaluate import evaluate_molecules

    lone = [(np.zeros((1, 3)), np.array([8]))] * 5     # the toy model's lone O atoms
    r = evaluate_molecules(lone, reference=None)
    assert r["validity"] == 1.0 and r["atom_stability"] == 0.0
    assert len(r["warnings"]) == 1 and "validity says little" in r["warnings"][0]
    water = [(np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]), np.array([8, 1, 1]))]
    assert evaluate_molecules(water * 3, reference=None)["warnings"] == []
    write_sdf(tmp_path / "o.sdf", lone)
    assert main(["evaluate", str(tmp_path / "o.sdf"), "--reference", "none"]) == 0
    assert "warning: validity is 100 %" in capsys.readouterr().out


def test_evaluate_without_qm9_reports_novelty_unavailable(monkeypatch, tmp_path):
    from ead.data import qm9
    from ead.metrics import chem
    from ead.metrics.evaluate import evaluate_molecules

    def missing():
        raise qm9.MissingQM9()

    monkeypatch.setenv("EAD_CACHE", str(tmp_path))       # no cached QM9 either
    monkeypatch.setattr(qm9, "qm9pack_data_dir", missing)
    chem._reference_smiles.cache_clear()
    try:
        water = [(np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]), np.array([8, 1, 1]))]
        r = evaluate_molecules(water, reference="qm9")
    finally:
        chem._reference_smiles.cache_clear()
    assert r["novelty"] is None and r["validity"] == 1.0
    assert any("ead[qm9]" in w for w in r["warnings"])
