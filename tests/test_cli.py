"""End to end through the `ead` command: train on a user's SDF, sample, read back; bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from ead.cli import main
from ead.data.files import read_molecules, write_sdf, write_xyz


@pytest.fixture(scope="module")
def trained(tmp_path_factory, qm9_train):
    """A micro model trained for a few steps on 40 QM9 molecules given as an SDF file."""
    root = tmp_path_factory.mktemp("cli")
    mols = list(qm9_train.subset(np.arange(40)))
    write_sdf(root / "mine.sdf", mols)
    rc = main(["train", "--data", str(root / "mine.sdf"), "--preset", "micro", "--max-steps", "4",
               "--batch-size", "8", "--ckpt-every", "2", "--val-every", "2", "--run-dir",
               str(root / "run"), "--threads", "1", "--quiet"])
    assert rc == 0
    return root


def test_train_on_sdf_then_sample_sdf_and_xyz(trained, capsys):
    model = trained / "run" / "model"
    meta = json.loads((model / "config.json").read_text())
    assert meta["model"]["atom_types"] == [1, 6, 7, 8, 9]          # taken from the data
    out = trained / "s.sdf"
    rc = main(["sample", "--model", str(model), "-n", "5", "-o", str(out), "--steps", "20",
               "--sampler", "adaptive", "--seed", "3", "--quiet"])
    assert rc == 0
    mols = [m for m in Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False)]
    assert len(mols) == 5 and all(m is not None and m.GetNumConformers() == 1 for m in mols)
    assert mols[0].GetProp("ead_sampler") == "adaptive" and mols[0].GetProp("ead_seed") == "3"
    assert mols[0].GetProp("ead_steps") == "20"
    assert 20 <= int(mols[0].GetProp("ead_network_calls")) <= 30   # 20 moves, the adaptive tail, the decode
    rc = main(["sample", "--model", str(model), "-n", "4", "-o", str(trained / "s.xyz"),
               "--steps", "10", "--sampler", "manual", "--quiet"])
    assert rc == 0 and len(read_molecules(trained / "s.xyz").molecules) == 4
    out = trained / "d.sdf"
    rc = main(["sample", "--model", str(model), "-n", "3", "-o", str(out), "--steps", "10",
               "--update", "dpm2m", "--quiet"])
    mols = [m for m in Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False)]
    assert rc == 0 and len(mols) == 3 and mols[0].GetProp("ead_update") == "dpm2m"


def test_same_seed_same_file(trained):
    model = str(trained / "run" / "model")
    for name in ("a.xyz", "b.xyz"):
        assert main(["sample", "--model", model, "-n", "3", "-o", str(trained / name), "--steps", "8",
                     "--seed", "9", "--quiet"]) == 0
    assert (trained / "a.xyz").read_text() == (trained / "b.xyz").read_text()


def _fails(argv, capsys, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and match in err, err
    return err


def test_bad_flags(trained, capsys, busy_machine):
    model = str(trained / "run" / "model")
    out = trained / "never.sdf"
    cases = [
        (["sample", "--model", model, "--steps", "0", "-o", str(out)], "positive integer"),
        (["sample", "--model", model, "--steps", "5000", "-o", str(out)], "steps must be"),
        (["sample", "--model", model, "--sampler", "magic", "-o", str(out)], "invalid choice"),
        (["sample", "--model", model, "--async-ratio", "1.5", "-o", str(out)], "(0, 1]"),
        (["sample", "--model", model, "-o", str(trained / "x.txt")], ".sdf, .xyz or .pdb"),
        (["sample", "--model", model, "-o", str(trained / "nodir" / "x.sdf")], "does not exist"),
        (["sample", "--model", model, "--t-async", "5000", "-o", str(out)], "t_async"),
        (["sample", "--model", model, "--update", "euler", "-o", str(out)], "invalid choice"),
        (["sample", "--model", model, "--eta", "2", "-o", str(out)], "[0, 1]"),
        (["train", "--window", "-1"], "integer ≥ 0"),
        (["train", "--preset", "huge"], "invalid choice"),
        (["train", "--window", "600", "--run-dir", str(trained / "w")], "window C"),
    ]
    for argv, match in cases:
        _fails(argv, capsys, match)
    assert not out.exists()
    assert not any(p.name.startswith(".never") for p in trained.iterdir())


def test_bad_models(trained, capsys, tmp_path):
    out = tmp_path / "o.sdf"
    _fails(["sample", "--model", str(tmp_path / "missing"), "-o", str(out)], capsys, "no model at")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "config.json").write_text((trained / "run" / "model" / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    _fails(["sample", "--model", str(bad), "-o", str(out)], capsys, "corrupt weights")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    _fails(["sample", "--model", str(foreign), "-o", str(out)], capsys, "not an EAD model")
    notjson = tmp_path / "notjson"
    notjson.mkdir()
    (notjson / "config.json").write_text("{oops")
    _fails(["sample", "--model", str(notjson), "-o", str(out)], capsys, "corrupt")
    # weights of another size than the config says
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((trained / "run" / "model" / "config.json").read_text())
    cfg["model"]["hidden"] = 48
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "model.safetensors").write_bytes((trained / "run" / "model" / "model.safetensors").read_bytes())
    _fails(["sample", "--model", str(other), "-o", str(out)], capsys, "do not fit")
    assert not out.exists()


def test_bad_training_data(tmp_path, capsys, monkeypatch, busy_machine):
    from ead.train import generator
    # as on a CPU with bfloat16 units, where training prints a precision note: bad data still gets one line
    monkeypatch.setattr(generator, "has_bf16_units", lambda device: True)
    (tmp_path / "unknown.xyz").write_text("2\nbad\nC 0 0 0\nQq 1 0 0\n")
    _fails(["train", "--data", str(tmp_path / "unknown.xyz"), "--run-dir", str(tmp_path / "r")],
           capsys, "unknown element")
    (tmp_path / "nan.xyz").write_text("2\nnan\nC 0 0 0\nO nan 0 0\n")
    _fails(["train", "--data", str(tmp_path / "nan.xyz"), "--run-dir", str(tmp_path / "r")],
           capsys, "")
    (tmp_path / "empty.sdf").write_text("")
    _fails(["train", "--data", str(tmp_path / "empty.sdf"), "--run-dir", str(tmp_path / "r")], capsys, "")
    _fails(["train", "--data", str(tmp_path / "nothere.sdf"), "--run-dir", str(tmp_path / "r")],
           capsys, "no such file")


def test_console_script_runs():
    exe = Path(sys.executable).with_name("ead")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "sample" in r.stdout and "train" in r.stdout
    r = subprocess.run([str(exe), "sample", "--steps", "x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_data_parallel_training_on_two_cpu_processes(trained):
    """The multi-device path (Lightning Fabric DDP, gloo on CPU): 2 processes, 1 checkpoint."""
    exe = Path(sys.executable).with_name("ead")
    run = trained / "ddp"
    r = subprocess.run([str(exe), "train", "--data", str(trained / "mine.sdf"), "--preset", "micro",
                        "--accelerator", "cpu", "--devices", "2", "--max-steps", "2", "--batch-size", "4",
                        "--ckpt-every", "2", "--val-every", "0", "--log-every", "1", "--run-dir", str(run),
                        "--threads", "1", "--quiet"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("trained steps 0 → 2") == 1           # only rank 0 reports
    rows = (run / "log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]
    assert (run / "model" / "model.safetensors").exists()


def test_tab_completion_script_completes_verbs_options_and_choices(tmp_path):
    """`ead completion bash` is generated from the parser; run it in a real bash and complete."""
    import shutil
    import subprocess

    from ead.cli import build_parser, completion_script

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = tmp_path / "ead.bash"
    script.write_text(completion_script(build_parser(), "bash"))

    def complete(*words):
        line = " ".join(["ead", *words])
        quoted = " ".join(f"'{w}'" for w in words)
        cmd = (f"source {script}; COMP_WORDS=(ead {quoted}); COMP_CWORD={len(words)}; _ead_complete; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
        out = subprocess.run([bash, "-c", cmd], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, (line, out.stderr)
        return out.stdout.split()

    assert complete("sa") == ["sample"]
    assert "--sampler" in complete("sample", "--sam") and "--steps" not in complete("sample", "--sam")
    assert complete("sample", "--sampler", "ad") == ["adaptive"]
    assert "--init-from" in complete("train", "--in")
    assert complete("train", "--preset", "") == ["paper", "geom", "medium", "small", "tiny", "micro"]
    assert complete("completion", "") == ["bash", "zsh"]


@pytest.mark.parametrize("content,message", [('{"format": "x"}', "not an EAD model config"),
                                             ("garbage{", "corrupt model config"), (None, "missing model config")])
def test_bad_model_config_is_one_line_for_every_verb(tmp_path, capsys, content, message):
    """One reader (ead.model.config.read_model_meta) for sample, info and the Python API."""
    from ead.cli import main

    (tmp_path / "m").mkdir()
    if content is not None:
        (tmp_path / "m" / "config.json").write_text(content)
    for argv in (["sample", "--model", str(tmp_path / "m"), "-n", "1", "-o", str(tmp_path / "o.sdf")],
                 ["info", "--model", str(tmp_path / "m")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o.sdf").exists()


def test_info_prints_versions_cache_and_a_readable_card(capsys):
    from ead.cli import main
    from ead.cli.info import _card_summary

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "data cache:" in out and "qm9: preset small" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("training:"))
    assert "steps" in line and "M molecules" in line and "{" not in line
    card = {"training_steps": 10, "training_hours": 0.5, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.9,
            "device": "cpu", "continues": [{"run": "a", "steps": 20, "hours": 1.0, "batch_size": 8, "device": "gpu"}],
            "total_training_steps": 30, "total_training_hours": 1.5, "total_molecules_seen": 200}
    assert _card_summary(card).startswith("30 steps, 200 molecules, 1.5 h (20 × 8 on gpu; then 10 × 4 on cpu)")
    assert _card_summary(card).endswith("docs/model-card.md")
    # a model trained here: its own facts, never the shipped model's card page
    toy = {"training_steps": 20, "training_hours": 0.0, "batch_size": 16, "data": "my_molecules"}
    line = _card_summary(toy, shipped=False)
    assert line.startswith("20 steps, 320 molecules, under a minute") and "model-card" not in line
    assert "data my_molecules" in line


def test_precision_auto_is_bf16_only_where_the_cpu_has_amx(trained, monkeypatch):
    import torch

    from ead import EADError
    from ead import device as pipeline   # the precision helpers

    cpu = torch.device("cpu")
    assert pipeline.resolve_precision("fp32", cpu) is None and pipeline.resolve_precision("bf16", cpu) == "bf16"
    for units in (True, False):
        monkeypatch.setattr(pipeline, "has_bf16_units", lambda device, units=units: units)
        assert pipeline.resolve_precision("auto", cpu) == ("bf16" if units else None)
    with pytest.raises(EADError, match="precision"):
        pipeline.resolve_precision("int8", cpu)
    monkeypatch.undo()
    # the command line's default is auto; --precision fp32 turns it off; both are recorded
    model = str(trained / "run" / "model")
    expect = "bf16" if pipeline.has_bf16_units(cpu) else None
    for flag, want in (([], expect), (["--precision", "fp32"], None)):
        out = trained / f"p{len(flag)}.sdf"
        assert main(["sample", "--model", model, "-n", "2", "-o", str(out), "--steps", "5", "--quiet", *flag]) == 0
        mol = next(iter(Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False)))
        got = mol.GetProp("ead_precision") if mol.HasProp("ead_precision") else None
        assert got == want
