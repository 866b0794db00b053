"""`ead predictor`: train a QM9 property predictor (it scores conditional generation)."""

from __future__ import annotations

import functools
import sys

from .common import add_threads_flag, default_of, nonneg_int, positive_float, positive_int

HELP = "train a QM9 property predictor (scores conditional generation)"


def add(sub):
    from ..train.predictor import PredictorTrainConfig   # torch: loaded for this verb only

    D = functools.partial(default_of, PredictorTrainConfig)   # every default is the config's
    from ..data.properties import QM9_UNITS

    p = sub.add_parser("predictor", help=HELP,
                       description="Train an EGNN predictor of one QM9 property on EDM's first half of "
                       "the training split (the conditional generator trains on the second). Resumes from "
                       "the last checkpoint in --run-dir; the exported RUN_DIR/model records its MAE on "
                       "QM9's test split (the protocol's lower bound). Use it with "
                       "`ead evaluate SAMPLES --predictor RUN_DIR/model`.")
    p.add_argument("--property", required=True, choices=list(QM9_UNITS))
    p.add_argument("--run-dir", default=D("run_dir"))
    p.add_argument("--split", choices=["first", "all"], default=D("split"),
                   help="QM9 training molecules used: EDM's first half (default) or all")
    p.add_argument("--layers", type=positive_int, default=D("layers"), help=f"EGNN depth (default {D('layers')}, EDM's)")
    p.add_argument("--hidden", type=positive_int, default=D("hidden"), help=f"EGNN width (default {D('hidden')}, EDM's)")
    p.add_argument("--batch-size", type=positive_int, default=D("batch_size"))
    p.add_argument("--lr", type=positive_float, default=D("lr"), help="peak learning rate (cosine to 0)")
    p.add_argument("--max-steps", type=positive_int, default=D("max_steps"))
    p.add_argument("--max-hours", type=positive_float)
    p.add_argument("--ckpt-every", type=positive_int, default=D("ckpt_every"))
    p.add_argument("--val-every", type=nonneg_int, default=D("val_every"))
    p.add_argument("--seed", type=int, default=D("seed"))
    add_threads_flag(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.predictor import PredictorTrainConfig, train_predictor

    s = train_predictor(PredictorTrainConfig(
        run_dir=args.run_dir, property=args.property, split=args.split, layers=args.layers,
        hidden=args.hidden, batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
        max_hours=args.max_hours, ckpt_every=args.ckpt_every, val_every=args.val_every, seed=args.seed,
        threads=args.threads, quiet=args.quiet))
    print(f"predictor of {args.property}: {s['step']} steps, test MAE {s['test_mae']:.4g} {s['unit']}; "
          f"model in {s['model_dir']}", file=sys.stderr)
    return 0
