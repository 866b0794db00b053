"""Asynchrony analysis (issue 6): with the adaptive sampler, do heavy atoms reach t = 0 before
hydrogens? Do ring atoms reach it before chain atoms? Samples many molecules, keeps the per-atom
times of every iterate (not the positions: a few MB for hundreds of molecules), and answers with
paired per-molecule statistics (src/ead/viz/analysis.py says how they are measured).

    nice .venv/bin/python benchmarks/asynchrony.py --update-doc docs/asynchrony.md   # shipped model
    nice .venv/bin/python benchmarks/asynchrony.py --model runs/x/model -n 64 --steps 200

--update-doc rewrites the block between `<!-- asynchrony:begin -->` and `<!-- asynchrony:end -->`
in the given Markdown file with the tables, the plots and the command that made them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_grid import markers, replace_between  # noqa: E402

BEGIN, END = markers("asynchrony")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qm9", help="model folder or shipped name (default qm9)")
    ap.add_argument("-n", "--num", type=int, default=256, help="molecules to sample (default 256)")
    ap.add_argument("--steps", type=int, help="network steps (default: the model's)")
    ap.add_argument("--async-ratio", type=float, help="λ (default: the sampler's, 0.8)")
    ap.add_argument("--history", type=int, help="w (default: the sampler's, 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a shared CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--figures", default="docs/figures", help="folder for the plots and the JSON")
    ap.add_argument("--update-doc", metavar="MD", help="rewrite the results block of this Markdown file")
    ap.add_argument("--model-label", help="how the doc names the model (default: its path)")
    ap.add_argument("--save", metavar="NPZ", help="also save the recorded times (to re-analyse later)")
    ap.add_argument("--load", metavar="NPZ", help="analyse trajectories saved by --save; no sampling")
    return ap.parse_args(argv)


def provenance(args, model, argv) -> str:
    from ead.pipeline import PRETRAINED_DIR

    shipped = not Path(args.model).exists() and (PRETRAINED_DIR / args.model).is_dir()
    card = model.card or {}
    steps = card.get("total_training_steps", card.get("training_steps"))   # the whole lineage
    trained = f", {steps} training steps" if steps is not None else ""
    what = f"the shipped model `{args.model}`" if shipped else (args.model_label or f"the model at `{args.model}`")
    line = (f"Measured {datetime.date.today().isoformat()} with {what} (preset {model.config.preset}, "
            f"window C = {model.config.window}{trained}) by:\n\n"
            f"```bash\nnice .venv/bin/python benchmarks/asynchrony.py {shlex.join(argv)}\n```\n")
    if not shipped:
        line = ("> **Provisional.** These numbers do not come from the shipped model. Regenerate them "
                "with the shipped model once it exists:\n>\n> ```bash\n> nice .venv/bin/python "
                "benchmarks/asynchrony.py --update-doc docs/asynchrony.md\n> ```\n\n") + line
    return line


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from ead.pipeline import EAD
    from ead.viz.analysis import analyse, markdown, plot_asynchrony
    from ead.viz.render import plot_times
    from ead.viz.trajectory import load_trajectories, record_trajectories, save_trajectories

    model = EAD.from_pretrained(args.model, device=args.device)
    t0 = time.time()
    if args.load:
        trajs = load_trajectories(args.load)
    else:
        trajs = record_trajectories(model, args.num, positions=False, sampler="adaptive", seed=args.seed,
                                    batch_size=args.batch_size, steps=args.steps,
                                    async_ratio=args.async_ratio, history=args.history)
    if args.save:
        save_trajectories(args.save, trajs, {"model": args.model})
    sampled = time.time() - t0
    result = analyse(trajs)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    plot = figures / "asynchrony.png"
    example = figures / "asynchrony_example_times.png"
    plot_asynchrony(trajs, result, plot)
    plot_times(trajs[0], example, title="one molecule from this run: per-atom time, atoms ordered by arrival at t = 0")
    (figures / "asynchrony.json").write_text(json.dumps(result, indent=2, default=str))
    table = markdown(result)
    print(table)
    print(f"{'loaded' if args.load else 'sampled'} {len(trajs)} molecules in {sampled:.0f} s; wrote {plot}, {example}, "
          f"{figures / 'asynchrony.json'}")
    if args.update_doc:
        doc = Path(args.update_doc)
        rel = lambda p: os.path.relpath(p, doc.parent)  # noqa: E731  links work from the doc's folder
        block = (provenance(args, model, argv) + "\n" + table + "\n"
                 f"![mean time offset of H, chain and ring atoms; per-group summary]({rel(plot)})\n\n"
                 f"![heat map of one molecule's per-atom times]({rel(example)})\n")
        replace_between(doc, BEGIN, END, block)
        print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
