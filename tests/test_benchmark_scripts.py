"""The scripts that produce the card, the study and the sweeps (benchmarks/): sample cells to files,
evaluate them elsewhere, render the tables into the docs. Small models, few steps: they check the
plumbing and the arithmetic, not the quality."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sample_grid  # noqa: E402


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory, tiny_config):
    import torch

    from ead.pipeline import EAD

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "micro"
    EAD(tiny_config, device="cpu").save_pretrained(path)
    return str(path)


def _cells(model, labels, seeds=(0,), n=4, steps=3):
    return [{"label": lab, "model": model, "sampler": sampler, "n": n, "seeds": list(seeds),
             "options": {"steps": steps}} for lab, sampler in labels]


def test_cells_round_trip_and_evaluate(tmp_path, micro_model):
    cells = _cells(micro_model, [("card-synchronous", "synchronous"), ("card-adaptive", "adaptive")], seeds=(0, 1))
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 4
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 0  # done already
    mols, meta = sample_grid.load_cell(tmp_path / "card-adaptive-s1.npz")
    assert len(mols) == 4 and meta["seed"] == 1 and meta["settings"]["sampler"] == "adaptive"
    assert all(p.shape == (len(z), 3) and np.isfinite(p).all() for p, z in mols)
    res = sample_grid.evaluate_cells(tmp_path, reference=None, log=lambda m: None)
    assert set(res) == {"card-synchronous", "card-adaptive"}
    entry = res["card-adaptive"]
    assert entry["molecules"] == 8 and len(entry["runs"]) == 2
    runs = [r["validity"] for r in entry["runs"]]
    assert entry["mean"]["validity"] == pytest.approx(np.mean(runs))
    assert entry["sd"]["validity"] == pytest.approx(np.std(runs, ddof=1))


def test_deadline_and_workers_split_the_jobs(tmp_path, micro_model):
    cells = _cells(micro_model, [("a", "synchronous"), ("b", "synchronous"), ("c", "synchronous")])
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", deadline=0.0, log=lambda m: None) == 0
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", worker=1, workers=2, log=lambda m: None) == 1
    assert [p.name for p in sample_grid.cell_files(tmp_path)] == ["b-s0.npz"]


def test_independent_workers_skip_a_claimed_cell_and_take_over_a_dead_workers(tmp_path, micro_model):
    import subprocess

    cells = _cells(micro_model, [("a", "synchronous"), ("b", "synchronous")])
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        (tmp_path / "a-s0.npz.claim").write_text(str(live.pid))   # another worker is sampling a
        (tmp_path / "b-s0.npz.claim").write_text(str(dead.pid))   # b's worker was killed
        said = []
        assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=said.append) == 1
        assert [p.name for p in sample_grid.cell_files(tmp_path)] == ["b-s0.npz"]
        assert any("a-s0.npz: being sampled by another worker" in m for m in said)
        assert not (tmp_path / "b-s0.npz.claim").exists() and (tmp_path / "a-s0.npz.claim").exists()
    finally:
        live.kill()
        live.wait()
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 1   # a, now free
    assert not list(tmp_path.glob("*.claim"))


def test_sweep_draws_lambda_one_once():
    import sampler_sweep

    labels = [c["label"] for c in sampler_sweep.sweep_cells("m", 10, steps=100)]
    assert "sweep-l1.0-w1" in labels and "sweep-l1.0-w2" not in labels and "sweep-l0.8-w5" in labels
    assert len(labels) == 4 * 3 + 1 + 3 and len(set(labels)) == len(labels)


def test_study_table_and_doc_update(tmp_path, micro_model):
    import async_vs_sync

    cells = _cells(micro_model, [(f"study-{c}-{s}", s) for c in ("c0", "c9") for s in ("synchronous", "adaptive")],
                   seeds=(0, 1))
    sample_grid.sample_cells(cells, tmp_path / "cells", device="cpu", log=lambda m: None)
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{async_vs_sync.BEGIN}\nold\n{async_vs_sync.END}\nafter\n")
    assert async_vs_sync.main([str(tmp_path / "cells"), "--update-doc", str(doc)]) == 0
    text = doc.read_text()
    assert "old" not in text and text.startswith("before") and text.endswith("after\n")
    assert text.count("| EDM (C = 0) |") == 2 and text.count("| EAD (C = 9) |") == 2
    assert "Seeds [0, 1], 4 molecules per seed" in text
    # a second table in its own block leaves the first alone
    doc.write_text(text + "<!-- few:begin -->\nold\n<!-- few:end -->\n")
    assert async_vs_sync.main([str(tmp_path / "cells"), "--update-doc", str(doc), "--block", "few"]) == 0
    both = doc.read_text()
    assert both.startswith(text) and "old" not in both and both.count("| EDM (C = 0) |") == 4


def test_card_and_steps_tables_from_cells(tmp_path, micro_model):
    import model_card
    import steps_sweep

    sde = _cells(micro_model, [("sde-synchronous-2", "synchronous")], steps=2)
    sde[0]["options"]["update"] = "sde-dpm2m"
    cells = _cells(micro_model, [("card-synchronous", "synchronous")], steps=4) + \
        _cells(micro_model, [("steps-synchronous-2", "synchronous")], steps=2) + sde
    sample_grid.sample_cells(cells, tmp_path / "cells", device="cpu", log=lambda m: None)
    res = sample_grid.evaluate_cells(tmp_path / "cells", reference=None, log=lambda m: None)
    (tmp_path / "m.json").write_text(json.dumps(res, default=str))
    rows, n = model_card.rows_from_grid(str(tmp_path / "m.json"))
    table = model_card.render(rows, n)
    assert table.splitlines()[2].startswith("| synchronous | 4 | 5 |")   # 4 steps + the decode call
    # the card's measurement joins the history (the training plot's points) under its lineage, once
    card = {"training_steps": 10, "batch_size": 256, "device": "NVIDIA H200", "precision": "32-true",
            "continues": [{"steps": 30, "batch_size": 64, "device": "cpu (x86_64, 2 cores)", "precision": "bf16-mixed"},
                          {"steps": 20, "batch_size": 64}], "total_molecules_seen": 50 * 64 + 10 * 256}
    hist = tmp_path / "history.json"
    hist.write_text('[\n {"molecules_seen": 1, "sampler": "synchronous", "n": 200}\n]\n')
    for _ in range(2):
        model_card.append_history(str(hist), model_card.history_rows(card, rows))
    entries = json.loads(hist.read_text())
    assert len(entries) == 2 and entries[0]["molecules_seen"] == 1 and len(hist.read_text().splitlines()) == 4
    new = entries[1]
    assert new["training_steps"] == "30 x 64 (CPU, bf16-mixed) + 20 x 64 (CPU) + 10 x 256 (H200)"
    assert new["molecules_seen"] == 5760 and new["sampler"] == "synchronous" and new["steps"] == 4
    assert new["molecule_stability"] == round(rows[0]["metrics"]["molecule_stability"], 4)
    rows = steps_sweep.rows_from_cells([str(tmp_path / "cells")], ["synchronous"])
    assert [(r["steps"], r["update"]) for r in rows] == [(4, "ancestral"), (2, "ancestral"), (2, "sde-dpm2m")]
    assert all(r["device"] == "cpu" for r in rows)
    rows = steps_sweep.rows_from_cells([str(tmp_path / "cells")], ["synchronous"], match="^(card|sde)-")
    assert [(r["steps"], r["update"]) for r in rows] == [(4, "ancestral"), (2, "sde-dpm2m")]
    table = steps_sweep.markdown(rows, steps_sweep.parse_args(["--from-cells", "x"]), [])
    assert "| synchronous | uniform | sde-dpm2m | fp32 | 2 | 4 |" in table
    lag = _cells(micro_model, [("steps-adaptive-2", "adaptive")], steps=2)
    sample_grid.sample_cells(lag, tmp_path / "lag", device="cpu", log=lambda m: None)
    rows = steps_sweep.rows_from_cells([str(tmp_path / "lag")], ["adaptive"])
    assert steps_sweep.sampler_name(rows[0]) == "adaptive, stall lag 1"      # the default, recorded


def test_sweep_report_fills_the_named_block_and_steps_doc_keeps_its_reading(tmp_path, micro_model):
    import sampler_sweep
    import steps_sweep

    cells = [{**c, "options": {**c["options"], "steps": 3}} for c in sampler_sweep.sweep_cells(str(micro_model), 4)
             if c["label"] in ("sweep-l0.8-w2", "sweep-l1.0-w1")]
    sample_grid.sample_cells(cells, tmp_path / "cells", device="cpu", log=lambda m: None)
    doc = tmp_path / "sweep.md"
    doc.write_text("<!-- sweep:begin -->\nold 100\n<!-- sweep:end -->\n<!-- sweep1000:begin -->\nold\n"
                   "<!-- sweep1000:end -->\n")
    assert sampler_sweep.main(["report", str(tmp_path / "cells"), "--update-doc", str(doc),
                               "--block", "sweep1000"]) == 0
    text = doc.read_text()
    assert "old 100" in text and "\nold\n" not in text and "| 0.8 | – | " in text

    md = tmp_path / "steps.md"
    grid = _cells(micro_model, [("steps-synchronous-2", "synchronous")], steps=2)
    sample_grid.sample_cells(grid, tmp_path / "grid", device="cpu", log=lambda m: None)
    md.write_text(f"generated before\n{steps_sweep.KEEP}\n## Reading\nwritten by hand\n")
    assert steps_sweep.main(["--from-cells", str(tmp_path / "grid"), "--samplers", "synchronous",
                             "--out-md", str(md), "--out-png", str(tmp_path / "steps.png")]) == 0
    text = md.read_text()
    assert "generated before" not in text and text.endswith(f"{steps_sweep.KEEP}\n## Reading\nwritten by hand\n")
    assert "| synchronous | uniform | ancestral | fp32 | 2 |" in text


def test_training_plot_follows_the_lineage(tmp_path):
    from ead.train import TrainConfig, train

    base = dict(preset="micro", limit_molecules=8, batch_size=8, val_every=0, log_every=1, quiet=True,
                threads=1)
    train(TrainConfig(run_dir=str(tmp_path / "a"), max_steps=3, ckpt_every=3, **base))
    train(TrainConfig(run_dir=str(tmp_path / "b"), max_steps=2, ckpt_every=2, init_from=str(tmp_path / "a"),
                      **{**base, "batch_size": 4}))
    import plot_training

    segs = plot_training.segments(tmp_path / "b")
    assert [(s[1], s[2], s[3]) for s in segs] == [(8, 0, 3), (4, 24, None)]
    out = tmp_path / "plot.png"
    plot_training.main([str(tmp_path / "b"), str(out)])
    assert out.stat().st_size > 10_000


def test_compare_cells_of_the_same_seed(tmp_path, micro_model):
    cells = _cells(micro_model, [("x", "synchronous")]) + [
        {**_cells(micro_model, [("y", "synchronous")])[0], "precision": "bf16"}]
    sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None)
    same = sample_grid.compare_cells(tmp_path / "x-s0.npz", tmp_path / "x-s0.npz")
    assert same == {"molecules": 4, "same_elements": 1.0, "median_rmsd": 0.0}
    low = sample_grid.compare_cells(tmp_path / "y-s0.npz", tmp_path / "x-s0.npz")
    assert low["molecules"] == 4 and low["median_rmsd"] > 0.0


def test_dummy_atom_report_counts_sizes_and_empty_slots(tmp_path, tiny_config, capsys):
    import dataclasses

    import torch

    import dummy_atoms
    from ead.pipeline import EAD

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config, size_mode="dummy", max_atoms=12, absent_bias=3)
    EAD(cfg, device="cpu").save_pretrained(tmp_path / "m")
    assert dummy_atoms.main([str(tmp_path / "m"), "--out", str(tmp_path / "o"), "-n", "6", "--steps", "3"]) == 0
    r = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert r["molecules"] + r["empty_dropped"] == 6 and r["slots"] == 12
    assert sum(r["sizes"]["histogram"].values()) == r["molecules"]
    assert all(int(m) <= 12 for m in r["sizes"]["histogram"])
    assert 0.0 <= r["sizes"]["tv_distance"] <= 1.0
    assert "| 6 |" in capsys.readouterr().out
    EAD(tiny_config, device="cpu").save_pretrained(tmp_path / "prior")
    assert dummy_atoms.main([str(tmp_path / "prior"), "--out", str(tmp_path / "p")]) == 2


def test_size_stats_against_p_m():
    import dummy_atoms

    s = dummy_atoms.size_stats(np.array([3, 3, 4, 4]), {3: 1, 4: 1})
    assert s["tv_distance"] == 0.0 and s["mean"] == s["reference_mean"] == 3.5
    s = dummy_atoms.size_stats(np.array([5, 5]), {3: 1, 4: 1})
    assert s["tv_distance"] == 1.0 and s["histogram"] == {5: 2}


def test_corrector_report_pools_seeds_against_the_default(tmp_path, micro_model, capsys):
    import corrector

    cells = [{"label": "default", "model": micro_model, "sampler": "adaptive", "n": 4, "seeds": [0, 1],
              "options": {"steps": 4}},
             {"label": "pc50-anc-r0.3", "model": micro_model, "sampler": "adaptive", "n": 4, "seeds": [0],
              "options": {"steps": 2, "update": "ancestral", "corrector_steps": 1, "corrector_snr": 0.3}}]
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 3
    res = sample_grid.evaluate_cells(tmp_path, reference=None, log=lambda m: None)
    assert res["pc50-anc-r0.3"]["runs"][0]["settings"]["corrector_steps"] == 1
    doc = tmp_path / "doc.md"
    doc.write_text("x\n<!-- corrector-table:begin -->\nold\n<!-- corrector-table:end -->\ny\n")
    assert corrector.main(["report", str(tmp_path), "--update-doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| default | --steps 4 | 0,1 | 8 |" in text and "--corrector-steps 1" in text and "old" not in text
    fake = {"default": {"runs": [{"n": 1000, "molecule_stability": 0.5}]},
            "x": {"runs": [{"n": 1000, "molecule_stability": 0.56}]}}
    assert corrector.difference(fake["default"], fake["x"]) == "+6.0 [+1.6, +10.4]"


def test_sampler_screen_splits_selection_from_confirmation(tmp_path, micro_model, capsys):
    import sampler_screen

    cells = [{"label": "card-adaptive", "model": micro_model, "sampler": "adaptive", "n": 4, "seeds": [0, 3, 4],
              "options": {"steps": 3}},
             {"label": "card-manual", "model": micro_model, "sampler": "manual", "n": 4, "seeds": [0, 3],
              "options": {"steps": 3}}]
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 5
    assert sampler_screen.main(["report", str(tmp_path)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| card")]
    # seed 0 in the selection rows, the confirmation seeds pooled apart (manual: seed 3 only)
    assert [r.split(" | ")[0] for r in rows] == ["| card-adaptive (selection)", "| card-manual (selection)",
                                                 "| card-adaptive (confirmation)", "| card-manual (confirmation)"]
    assert " | 3,4 | 8 | " in rows[2] and " | 3,4 | 4 | " in rows[3] and rows[3].count("[") == 2
    # a later round samples only its own cells; the earlier ones come from the committed report
    earlier = tmp_path / "metrics.json"
    assert sampler_screen.main(["report", str(tmp_path), "--json", str(earlier)]) == 0
    capsys.readouterr()
    later = tmp_path / "round4"
    cell = {"label": "r4-below500-48x2", "model": micro_model, "sampler": "adaptive", "n": 4, "seeds": [0],
            "options": {"steps": 3, "corrector_steps": 1, "corrector_below": 500}}
    assert sample_grid.sample_cells([cell], later, device="cpu", log=lambda m: None) == 1
    assert sampler_screen.main(["report", str(later), "--known", str(earlier), "--json", str(later / "m.json")]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(("| card", "| r4"))]
    assert rows[0].startswith("| card-adaptive (selection)") and rows[2].startswith("| r4-below500-48x2 (selection)")
    assert rows[2].count("[") == 2 and "corrector_below 500" in rows[2]
    merged = json.loads((later / "m.json").read_text())
    assert set(merged) == {"card-adaptive", "card-manual", "r4-below500-48x2"}
    assert merged["r4-below500-48x2"]["runs"][0]["settings"]["corrector_below"] == 500


def test_fragments_table_puts_results_side_by_side(tmp_path, capsys):
    import fragments

    task = {"tasks": 2, "network_calls": 98, "fragment_max_deviation_angstrom": 0.0, "fragment_elements_kept": True,
            "diverged": 0.0, "validity": 0.5, "molecule_stability": 0.25, "atom_stability_of_finite": 0.9,
            "connectivity": 0.75, "uniqueness": 1.0, "novelty": 1.0, "contains_fragment": 0.5,
            "contains_fragment_of_valid": 1.0, "original_recovered": 0.0}
    for name, valid in (("replacement", 0.5), ("fragment-trained", 0.75)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"model": name, "per_fragment": 2, "fragments": dict(task, validity=valid), "linkers": task}))
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- fragments-table:begin -->\nold\n<!-- fragments-table:end -->\n")
    paths = [str(tmp_path / "replacement.json"), str(tmp_path / "fragment-trained.json")]
    assert fragments.main(["--table", *paths, "--update-doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| validity | 50.0 % | 75.0 % | 50.0 % | 50.0 % |" in text and "old" not in text
    assert "fragments (2 × 2): fragment-trained" in text.splitlines()[1]
    assert fragments.main(["--table", str(tmp_path / "missing.json")]) == 2


def test_weights_table_compares_against_the_first_row(tmp_path, micro_model, capsys):
    import cooldown
    import fragment_card

    # the fragment card samples the cooldown's cell (sampler, options, seeds) with other weights
    (ours,), theirs = fragment_card.cells(), cooldown.cells()[0]
    assert ours["options"] == theirs["options"] and set(theirs["seeds"]) < set(ours["seeds"])
    assert ours["model"] != theirs["model"]
    cells = [dict(theirs, label=cooldown.LABEL, model=micro_model, n=4, options={"steps": 3}),
             dict(ours, label=fragment_card.LABEL, model=micro_model, n=4, seeds=[1, 2, 3], options={"steps": 3})]
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 5
    assert fragment_card.main(["report", str(tmp_path)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| shipped") or r.startswith("| fragment")]
    assert rows[0].count("–") >= 2 and rows[1].count("[") == 2   # Δ only on the second row
    assert " | 1,2 | 8 | " in rows[1]   # the seed pair: the candidate's seeds 1 and 2 only
    # the five-seed table: the shipped model's committed cells (seeds 0-4) against the candidate's
    assert rows[2].startswith("| shipped") and " | 0,1,2,3,4 | 5000 | " in rows[2]
    assert " | 1,2,3 | 12 | " in rows[3] and rows[3].count("[") == 2
    # the second cooldown: its cells and the shipped weights' own, sampled into one folder
    second = tmp_path / "second"
    assert [c["label"] for c in cooldown.cells()] == [cooldown.LABEL, *(label for label, _ in cooldown.SECOND),
                                                      cooldown.SECOND_NOW[1][0]]
    # the earlier default corrects after every move, whatever the shipped model's defaults say now
    assert cooldown.cells()[1]["options"]["corrector_below"] == 1000
    assert cooldown.cells()[-1]["options"]["corrector_below"] == 200
    labels = [label for label, _ in cooldown.SECOND] + [cooldown.NOW, cooldown.SECOND_NOW[1][0]]
    cells = [dict(cooldown.cell(label, micro_model), n=4, options={"steps": 3}) for label in labels]
    assert sample_grid.sample_cells(cells, second, device="cpu", log=lambda m: None) == 8
    assert cooldown.main(["report", str(second)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(("| shipped", "| second"))]
    assert rows[0].startswith("| shipped (cpu12 EMA), earlier default sampler | 1,2 | 8 |") and rows[0].count("[") == 0
    assert rows[1].startswith("| second cooldown (cpu13 EMA), earlier default sampler | 1,2 | 8 |")
    assert rows[1].count("[") == 2
    assert rows[2].startswith("| shipped (cpu12 EMA), default sampler | 1,2 | 8 |") and rows[2].count("[") == 0
    assert rows[3].startswith("| second cooldown (cpu13 EMA), default sampler | 1,2 | 8 |") and rows[3].count("[") == 2


def test_default_pool_pools_the_two_studies_default_cells(capsys):
    import default_pool

    assert default_pool.main() == 0
    now, earlier = capsys.readouterr().out.splitlines()
    # the default: one cell of seeds 0-4; the earlier one: seeds 0, 3, 4 from the sampler screen and
    # 1, 2 from the cooldown, each seed once
    assert now.startswith("| adaptive, default, seeds 0,1,2,3,4 (5,000 molecules, 97 calls) | ")
    assert earlier.startswith("| adaptive, earlier default, seeds 0,1,2,3,4 (5,000 molecules, 98 calls) | ")
    for row in (now, earlier):
        atom, mol, valid = (float(v) for v in row.split(" | ")[1:4])
        assert 0 < mol < atom <= 100 and 0 < valid <= 100


def test_fragments_sampler_options_parse_as_ead_sample_flags():
    import fragments

    assert fragments.sampler_options(["steps=100", "update=sde-dpm2m", "corrector_snr=0.5"]) == \
        {"steps": 100, "update": "sde-dpm2m", "corrector_snr": 0.5}
    for bad in ("steps=0", "steps=x", "nosuch=1", "steps"):
        with pytest.raises(SystemExit):
            fragments.sampler_options([bad])


def test_recipe_table_compares_each_arm_with_edm_on_shared_seeds():
    import recipe_screen

    def row(arm, seed, valid, window=9):
        return {"arm": arm, "window": window, "seed": seed, "preset": "tiny", "molecules": 1000, "n": 1000,
                "options": recipe_screen.ARMS[arm], "sampler": "adaptive", "atom_stability": 0.5,
                "molecule_stability": 0.1, "validity": valid, "valid_and_unique": valid, "train_hours": 0.5}

    res = {"a": row("edm", 0, 0.20), "b": row("edm", 1, 0.30), "c": row("x0", 0, 0.40),
           "d": row("min-snr", 2, 0.10), "e": row("x0", 0, 0.50, window=0)}
    lines = {line.split(" | ")[2] + line.split(" | ")[4]: line for line in recipe_screen.table(res).splitlines()[2:]}
    # x0 at C = 9 ran seed 0 only: compared with EDM's seed 0 (20 %), not with its two-seed mean
    assert "| +0.0 [-2.6, +2.6] | +20.0 [+16.1, +23.9] |" in lines["x09"]
    assert "| – | – |" in lines["edm9"]
    assert "| – | – |" in lines["min-snr9"]  # no seed in common with EDM's cells
    assert "| – | – |" in lines["x00"]    # no EDM cell at C = 0
    # the same arm and seed trained in another precision is a row of its own, not pooled as a second seed
    res["f"] = {**row("x0", 0, 0.60), "precision": "bf16-mixed"}
    x0_rows = [line for line in recipe_screen.table(res).splitlines() if "| x0 |" in line and "| 9 |" in line]
    assert len(x0_rows) == 2 and all("| 0 |" in line for line in x0_rows)
    assert any("| 60.0 |" in line and "bf16-mixed" in line for line in x0_rows)
    assert recipe_screen.cell_name("x0", 9, 0, "tiny", 1_000_000, "bf16") == "tiny-1000k-x0-c9-s0-bf16"


def test_recipe_plan_lists_the_missing_cells_with_their_hours(monkeypatch, capsys):
    import recipe_screen

    def row(arm, window, seed, hours):
        return {"arm": arm, "window": window, "seed": seed, "preset": "tiny", "molecules": 1_000_000 // 64 * 64,
                "train_hours": hours, "sample_seconds": 360.0}

    done = {recipe_screen.cell_name(arm, w, s, "tiny", 1_000_000): row(arm, w, s, h)
            for arm, w, s, h in (("edm", 9, 0, 0.5), ("edm", 0, 0, 0.7), ("x0", 9, 0, 1.9))}
    monkeypatch.setattr(recipe_screen, "load_results", lambda: done)
    assert recipe_screen.main(["run", "--plan", "--arms", "edm,x0,v", "--seeds", "0"]) == 0
    out, err = capsys.readouterr()
    # edm at C = 9 and 0 are finished; x0 at C = 0 is estimated from x0's cell, v from all cells
    assert out.splitlines() == ["tiny-1000k-x0-c0-s0\t2.00 h", "tiny-1000k-v-c9-s0\t1.13 h",
                                "tiny-1000k-v-c0-s0\t1.13 h"]
    assert "3 cells to run, about 4.3 CPU-hours" in err


def test_convergence_study_cells_flatness_and_paired_report(tmp_path):
    import convergence

    runs = tmp_path / "runs"
    for window, seed, steps in ((0, 0, 40), (9, 0, 40), (18, 0, 20), (0, 1, 40), (9, 1, 40)):
        d = runs / convergence.run_name("tiny", window, seed)
        (d / "model").mkdir(parents=True)
        (d / "model" / "config.json").write_text(json.dumps({"card": {"training_steps": steps, "training_hours": 0.5}}))
        falls = [1.0, 0.9, 0.8, 0.79, 0.789] if window else [1.0, 0.9, 0.8, 0.7, 0.6]
        (d / "log.csv").write_text("step,loss,val_loss\n" + "".join(
            f"{10 * (i + 1)},0.5,{v}\n" for i, v in enumerate(falls)))
    cells = convergence.cells(runs, "tiny", [0, 9, 18], [0, 1], 40, 1000, sweep=True)
    labels = [c["label"] for c in cells]
    # the unfinished C = 18 run has no cells; C = 0 only the synchronous sampler; manual only at C = 9
    assert not any(x.startswith("c18") for x in labels)
    assert {x for x in labels if x.startswith("c0-s0")} == {"c0-s0-synchronous-100", "c0-s0-synchronous-1000"}
    assert "c9-s1-manual-1000" in labels and labels.index("c9-s1-manual-100") < labels.index("c0-s0-synchronous-1000")
    assert sum(x.startswith("c9-s0-adaptive-1000-") for x in labels) == len(convergence.SWEEP)
    # a budget extended past 20 steps: the model kept at 20 is still sampled at 20, the current one at 40
    c18 = runs / "tiny-c18-s0"
    convergence.keep_budget(c18, 20)
    (c18 / "model" / "config.json").write_text(json.dumps({"card": {"training_steps": 40}}))
    at20 = [c for c in convergence.cells(runs, "tiny", [18], [0], 20, 1000, sweep=False)]
    assert at20 and all(c["model"].endswith("tiny-c18-s0/model-20") for c in at20)
    assert all(c["model"].endswith("tiny-c18-s0/model")
               for c in convergence.cells(runs, "tiny", [18], [0], 40, 1000, sweep=False))
    assert not convergence.cells(runs, "tiny", [18], [0], 30, 1000, sweep=False)
    shutil.rmtree(c18 / "model-20")
    (c18 / "model" / "config.json").write_text(json.dumps({"card": {"training_steps": 20, "training_hours": 0.5}}))
    # last 20 % of steps = steps 40-50: 0.79 → 0.789 is flat, 0.7 → 0.6 is not
    assert convergence.flatness(runs / "tiny-c9-s0" / "log.csv")["flat"]
    assert not convergence.flatness(runs / "tiny-c0-s0" / "log.csv")["flat"]
    # the projection recovers a power law's budget: 0.13 + 2·step^-0.5 falls < 0.5 % over its last 20 %
    # from about step 120,900 (2·(1/√0.8 − 1)/√T < 0.005·(0.13 + 2/√T))
    law = tmp_path / "law.csv"
    law.write_text("step,val_loss\n" + "".join(f"{t},{0.13 + 2 * t ** -0.5}\n" for t in range(1_000, 21_000, 1_000)))
    text = convergence.projection(law, after=0)
    budget = int(text.rsplit("about step ", 1)[1].replace(",", ""))
    assert "0.1300 + 2·step^-0.500" in text and 115_000 < budget < 128_000
    assert "too few" in convergence.projection(runs / "tiny-c9-s0" / "log.csv")
    table = convergence.training_table(runs)
    assert "| tiny-c18-s0 | 20 | 1,280 |" in table and table.count("| no |") == 2

    def entry(mol):
        return {"molecules": 1000, "mean": {"atom_stability": 0.9, "molecule_stability": mol, "validity": 0.8,
                                             "valid_and_unique": 0.8, "network_calls": 1001}}
    res = {"c0-s0-synchronous-1000": entry(0.50), "c0-s1-synchronous-1000": entry(0.60),
           "c9-s0-adaptive-1000": entry(0.55), "c9-s1-adaptive-1000": entry(0.69),
           "c9-s0-adaptive-1000-w5": entry(0.45)}
    main_table, sweep = convergence.render(res)
    # per-seed differences +5 and +9: mean +7, t interval 7 ± 12.706 · 2.83 / 1.41
    assert "| EAD (C = 9, adaptive) − EDM (C = 0) | 1000 | +0.0 [+0.0, +0.0] (2 seeds) | +7.0 [-18.4, +32.4] (2 seeds) |" in main_table
    assert "| 0 | synchronous | 1000 | 0,1 | 1001 | 90.0 ± 0.0 | 55.0 ± 7.1 |" in main_table
    assert "| 0.8 | 5 | 0 |" in sweep and "| -10.0 (1 seed) |" in sweep
    del res["c9-s0-adaptive-1000-w5"]
    assert convergence.render(res)[1] == ""   # no varied λ / w: no ablation table (the doc keeps its block)


def test_precision_curve_judges_blocks_against_the_loss_noise(tmp_path, capsys):
    import precision_curve

    rows = "step,loss\n" + "".join(f"{s},{0.3 + 0.01 * ((s // 50) % 2)}\n" for s in range(50, 1050, 50))
    (tmp_path / "a.csv").write_text(rows)
    (tmp_path / "same.csv").write_text(rows.replace(",0.3\n", ",0.3002\n"))
    (tmp_path / "off.csv").write_text("step,loss\n" + "".join(f"{s},0.35\n" for s in range(50, 1050, 50)))
    assert precision_curve.main([str(tmp_path / "a.csv"), str(tmp_path / "same.csv"), "--out", str(tmp_path / "c.png")]) == 0
    assert "3 of 3 judged blocks within noise" in capsys.readouterr().out and (tmp_path / "c.png").stat().st_size > 0
    assert precision_curve.main([str(tmp_path / "a.csv"), str(tmp_path / "off.csv")]) == 0
    assert "0 of 3 judged blocks within noise" in capsys.readouterr().out
    assert precision_curve.main([str(tmp_path / "a.csv"), str(tmp_path / "missing.csv")]) == 2
