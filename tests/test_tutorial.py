"""docs/tutorial.md runs as written: every ```bash block, in order, in one fresh folder.

A block made only of `ead …` commands runs in this process through `ead.cli.main` (each command
as its own argv): starting a new Python with torch for every command would cost seconds each.
Any other block (shell, Python here-documents) runs in bash, with this interpreter's folder first
on PATH so that `python` and `ead` are the ones under test.

Two substitutions, each announced in the test output, keep the tutorial testable before the rest
of the project is complete; neither changes what the tutorial says:
- until the shipped model exists, `ead sample` without `--model` samples from an untrained micro
  model with QM9's size distribution (the commands still run; the molecules are noise);
- until `ead evaluate` exists (another issue), its commands are skipped, with that reason.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ead.cli import main

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def bash_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)]


def ead_commands(block: str) -> list[list[str]] | None:
    """The argv of each command if the block holds only `ead` commands (and comments), else None."""
    lines = [ln.strip() for ln in block.replace("\\\n", " ").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines or not all(ln.startswith("ead ") for ln in lines):
        return None
    return [shlex.split(ln, comments=True)[1:] for ln in lines]


BLOCKS = bash_blocks(TUTORIAL.read_text())


def test_the_tutorial_has_the_four_steps():
    text = "\n".join(BLOCKS)
    for verb in ("ead sample", "ead view", "ead evaluate", "ead train --data my_molecules"):
        assert verb in text, verb
    assert "--model runs/mine/model" in text   # sampling from the model trained in the tutorial


class Runner:
    """Runs the blocks in order, once each, in one folder; remembers what each one did."""

    def __init__(self, workdir: Path, standin_model: str | None):
        self.workdir = workdir
        self.standin = standin_model
        self.done: dict[int, list[str]] = {}   # block index -> notes (substitutions, skips)

    def run_through(self, index: int) -> list[str]:
        for k in range(index + 1):
            if k not in self.done:
                self.done[k] = self._run(k)
        return self.done[index]

    def _run(self, k: int) -> list[str]:
        block, notes = BLOCKS[k], []
        commands = ead_commands(block)
        if commands is None:
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=self.workdir, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"block {k} failed:\n{block}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            return notes
        cwd = os.getcwd()
        os.chdir(self.workdir)
        try:
            for argv in commands:
                if argv[0] == "evaluate" and importlib.util.find_spec("ead.metrics.evaluate") is None:
                    notes.append("skipped `ead evaluate`: ead.metrics.evaluate is not in this build yet")
                    continue
                if argv[0] == "sample" and "--model" not in argv and self.standin:
                    argv = [*argv, "--model", self.standin]
                    notes.append("the shipped model is missing: sampled from an untrained stand-in")
                rc = main(argv)
                assert rc == 0, f"`ead {shlex.join(argv)}` exited with {rc}"
        finally:
            os.chdir(cwd)
        return notes


@pytest.fixture(scope="module")
def runner(tmp_path_factory, qm9_train):
    from ead.model.config import ModelConfig
    from ead.pipeline import EAD, available_models

    work = tmp_path_factory.mktemp("tutorial")
    standin = None
    if "qm9" not in available_models():
        cfg = ModelConfig.from_preset("micro", size_histogram=qm9_train.size_histogram())
        standin = str(EAD(cfg, device="cpu").save_pretrained(tmp_path_factory.mktemp("standin") / "model"))
    return Runner(work, standin)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{k}" for k in range(len(BLOCKS))])
def test_tutorial_block(runner, index, capsys):
    notes = runner.run_through(index)
    with capsys.disabled():
        for note in notes:
            print(f"\n[tutorial block {index}] {note}", end="")
    if notes and all(n.startswith("skipped") for n in notes) and len(notes) == len(ead_commands(BLOCKS[index]) or []):
        pytest.skip(notes[0])


def test_tutorial_outputs(runner):
    runner.run_through(len(BLOCKS) - 1)
    w = runner.workdir
    for name in ("first.sdf", "first.png", "first.html", "first_traj/trajectory.npz",
                 "first_traj/molecule_00.gif", "first_traj/molecule_00_times.png",
                 "my_molecules/part0.sdf", "runs/mine/model/config.json", "mine.sdf", "mine.png", "mine.html",
                 "fragment.sdf", "grown.sdf", "pictures/grown.png", "pictures/grown.html"):
        assert (w / name).exists(), name
