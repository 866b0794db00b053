"""The `ead` command: train | sample | evaluate | predictor | info (and view, bench).

Every error a user can cause ends in one line `ead: error: …` and exit status 2; no traceback,
no half-written output file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import EADError, __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + line
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int, what: str):
    """An argparse type: an integer ≥ low, with one readable message for anything else."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer ≥ 0")


def _float_in_unit(open_at_zero: bool):
    """An argparse type: a number in (0, 1] or in [0, 1]."""
    span = "(0, 1]" if open_at_zero else "[0, 1]"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}") from None
        if not (0.0 < v if open_at_zero else 0.0 <= v) or v > 1.0:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}")
        return v

    return parse


_fraction = _float_in_unit(open_at_zero=True)
_unit_float = _float_in_unit(open_at_zero=False)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


# ------------------------------------------------------------------------------------ train
def _add_train(sub):
    from .config import PRESETS

    p = sub.add_parser("train", help="train EAD (or EDM with --window 0) on QM9 or your molecules",
                       description="Train EAD with Algorithm 1 (per-atom times within ±C). Resumes "
                       "automatically from the last checkpoint in --run-dir.")
    p.add_argument("--data", default="qm9",
                   help="'qm9' (default), an SDF/XYZ file or folder, or EDM's processed GEOM-Drugs array "
                        "geom_drugs_30.npy (its geom_permutation.npy beside it gives EDM's split)")
    p.add_argument("--run-dir", default="runs/ead", help="checkpoints, logs and the exported model")
    p.add_argument("--remove-h", action="store_true", help="train without hydrogens")
    p.add_argument("--preset", default="small", choices=list(PRESETS), help="network size (default small)")
    p.add_argument("--layers", type=_positive_int, help="override the preset's depth")
    p.add_argument("--hidden", type=_positive_int, help="override the preset's width")
    p.add_argument("--window", type=_nonneg_int, default=9, help="EAD's window C (0 = EDM); default 9")
    p.add_argument("--noise-schedule", default="polynomial_2", choices=["polynomial_2", "cosine"])
    p.add_argument("--timesteps", type=_positive_int, default=1000, help="T (default 1000)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=_positive_float, default=1e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--no-clip-grad", action="store_true", help="turn off EDM's adaptive clipping")
    p.add_argument("--max-steps", type=_nonneg_int, default=100_000)
    p.add_argument("--max-hours", type=_positive_float, help="stop (with a checkpoint) once the run has trained this long in all: a resumed run counts "
                        "its earlier time")
    p.add_argument("--ckpt-every", type=_positive_int, default=500)
    p.add_argument("--keep-checkpoints", type=_nonneg_int, default=2,
                   help="checkpoints kept on disk (default 2; 0 = all, for comparisons at equal steps)")
    p.add_argument("--init-from", metavar="RUN",
                   help="start from another run's last checkpoint (weights, EMA, optimizer), e.g. to "
                        "continue on other hardware or with another batch size, or to make an unconditional "
                        "model conditional (with --condition: the new inputs start at zero) or a p(M) model a "
                        "dummy-atom one (with --size-mode dummy); recorded in the card")
    p.add_argument("--log-every", type=_positive_int, default=50)
    p.add_argument("--val-every", type=_nonneg_int, default=2000, help="0 = no validation loss")
    p.add_argument("--sample-every", type=_nonneg_int, default=0,
                   help="sample and measure stability every N steps (0 = never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket", action="store_true", help="batch molecules of similar size together")
    p.add_argument("--accelerator", default="auto", help="auto | cpu | cuda (Lightning Fabric)")
    p.add_argument("--devices", type=_positive_int, default=1, help="GPUs (or processes) per node")
    p.add_argument("--num-nodes", type=_positive_int, default=1)
    p.add_argument("--precision", default="32-true", help="Fabric precision, e.g. bf16-mixed")
    p.add_argument("--threads", type=_positive_int, help="CPU threads")
    p.add_argument("--condition", metavar="PROPS",
                   help="train a conditional model on these properties, comma-separated: QM9's alpha, "
                        "gap, homo, lumo, mu, Cv (EDM's units), or numeric SD data fields of your SDF")
    p.add_argument("--condition-split", choices=["second", "first", "all"], default="second",
                   help="QM9 molecules a conditional model trains on: EDM's second half of the training "
                        "split (default; the first trains the property predictor) or all")
    p.add_argument("--charges", choices=["on", "off"],
                   help="the atomic-number input feature Z/10 (EDM's include_charges); default: on for "
                        "QM9 and your files, off for GEOM-Drugs, as EDM trains them")
    p.add_argument("--size-mode", choices=["prior", "dummy"], default="prior",
                   help="how the model sizes its molecules: prior (default, EDM) = M drawn from the "
                        "data's p(M) at sampling; dummy = every molecule is --max-atoms slots and an "
                        "extra 'absent' type marks the empty ones, so the network chooses the size "
                        "(method.md §8, docs/dummy-atoms.md)")
    p.add_argument("--max-atoms", type=_positive_int,
                   help="dummy mode: slots per molecule (default: the largest molecule in the data)")
    p.add_argument("--absent-bias", type=_nonneg_int,
                   help="dummy mode: time steps added to absent atoms' times in training, so they "
                        "are noisier than the real atoms around them (default: the window C)")
    p.add_argument("--filter-size", type=_positive_int, metavar="N",
                   help="train (and validate) only on molecules of at most N atoms, counted after "
                        "--remove-h; EDM trains GEOM-Drugs this way with --filter_molecule_size")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the log's numbers (loss, grad norm, validation loss, sampled "
                        "stability) as TensorBoard scalars to RUN_DIR/tensorboard (needs the tensorboard "
                        "package); log.csv is always written")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(run_dir=args.run_dir, data=args.data, remove_h=args.remove_h, preset=args.preset,
                      layers=args.layers, hidden=args.hidden, window=args.window,
                      noise_schedule=args.noise_schedule, timesteps=args.timesteps,
                      batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                      clip_grad=not args.no_clip_grad, max_steps=args.max_steps,
                      max_hours=args.max_hours, ckpt_every=args.ckpt_every, log_every=args.log_every,
                      val_every=args.val_every, sample_every=args.sample_every, seed=args.seed,
                      bucket=args.bucket, accelerator=args.accelerator, devices=args.devices,
                      num_nodes=args.num_nodes, precision=args.precision, threads=args.threads,
                      quiet=args.quiet, keep_checkpoints=args.keep_checkpoints,
                      init_from=args.init_from, condition_split=args.condition_split,
                      size_mode=args.size_mode, max_atoms=args.max_atoms, absent_bias=args.absent_bias,
                      tensorboard=args.tensorboard, filter_size=args.filter_size,
                      include_charges=None if args.charges is None else args.charges == "on",
                      condition=tuple(c.strip() for c in (args.condition or "").split(",") if c.strip()))
    if args.data != "qm9" and not Path(args.data).exists():
        raise EADError(f"no such file or folder: {args.data}")
    s = train(cfg)
    if s["rank"] != 0:
        return 0
    print(f"trained steps {s['start_step']} → {s['step']}"
          + (f", loss {s['first_loss']:.4f} → {s['last_loss']:.4f}" if "last_loss" in s else "")
          + f"; model in {s['model_dir']}")
    return 0


# ------------------------------------------------------------------------------------ predictor
def _add_predictor(sub):
    from .data.properties import QM9_UNITS

    p = sub.add_parser("predictor", help="train a QM9 property predictor (scores conditional generation)",
                       description="Train an EGNN predictor of one QM9 property on EDM's first half of "
                       "the training split (the conditional generator trains on the second). Resumes from "
                       "the last checkpoint in --run-dir; the exported RUN_DIR/model records its MAE on "
                       "QM9's test split (the protocol's lower bound). Use it with "
                       "`ead evaluate SAMPLES --predictor RUN_DIR/model`.")
    p.add_argument("--property", required=True, choices=list(QM9_UNITS))
    p.add_argument("--run-dir", default="runs/predictor")
    p.add_argument("--split", choices=["first", "all"], default="first",
                   help="QM9 training molecules used: EDM's first half (default) or all")
    p.add_argument("--layers", type=_positive_int, default=7, help="EGNN depth (default 7, EDM's)")
    p.add_argument("--hidden", type=_positive_int, default=128, help="EGNN width (default 128, EDM's)")
    p.add_argument("--batch-size", type=_positive_int, default=96)
    p.add_argument("--lr", type=_positive_float, default=5e-4, help="peak learning rate (cosine to 0)")
    p.add_argument("--max-steps", type=_positive_int, default=100_000)
    p.add_argument("--max-hours", type=_positive_float)
    p.add_argument("--ckpt-every", type=_positive_int, default=1000)
    p.add_argument("--val-every", type=_nonneg_int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_predictor)


def _run_predictor(args) -> int:
    from .predictor import PredictorTrainConfig, train_predictor

    s = train_predictor(PredictorTrainConfig(
        run_dir=args.run_dir, property=args.property, split=args.split, layers=args.layers,
        hidden=args.hidden, batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
        max_hours=args.max_hours, ckpt_every=args.ckpt_every, val_every=args.val_every, seed=args.seed,
        threads=args.threads, quiet=args.quiet))
    print(f"predictor of {args.property}: {s['step']} steps, test MAE {s['test_mae']:.4g} {s['unit']}; "
          f"model in {s['model_dir']}")
    return 0


# ------------------------------------------------------------------------------------ sample
def _add_sample(sub):
    from .diffusion.schedules import SAMPLERS
    from .diffusion.updates import UPDATES

    p = sub.add_parser("sample", help="generate molecules as SDF or XYZ",
                       description="Sample molecules from a trained model with any sampler. "
                       "Defaults come from the model's config.")
    p.add_argument("--model", default="qm9", help="model folder, or a shipped model name (default qm9)")
    p.add_argument("-n", "--num", type=_positive_int, default=100, help="number of molecules")
    p.add_argument("-o", "--output", default="samples.sdf", help=".sdf or .xyz (default samples.sdf)")
    p.add_argument("--sampler", choices=list(SAMPLERS), help="synchronous | manual | adaptive")
    p.add_argument("--steps", type=_positive_int,
                   help="network steps (≤ T; fewer = strided); default: the model's (the shipped qm9: "
                        "100; trained models: T)")
    p.add_argument("--spacing", choices=["uniform", "snr"], help="how strided steps are spread")
    p.add_argument("--window", type=_nonneg_int, help="asynchrony window C (default: the model's)")
    p.add_argument("--async-ratio", type=_fraction, help="adaptive: fraction λ of atoms advanced")
    p.add_argument("--history", type=_positive_int, help="adaptive: velocity window w")
    p.add_argument("--t-async", type=_nonneg_int, help="synchronous warm-up down to this time")
    p.add_argument("--stall-lag", type=_nonneg_int,
                   help="adaptive: time units a stalled atom falls behind per iteration (default 1 on "
                        "uniform grids: at --steps < T it moves the rest of the stride; 0 = it stops "
                        "for a whole stride, the paper's rule; the same at --steps = T)")
    p.add_argument("--update", choices=list(UPDATES),
                   help="how atoms move from t to s: ancestral (EDM's step; --eta < 1 = DDIM), sde-dpm2m "
                        "(DPM-Solver++(2M) SDE: the few-step rule) or dpm2m (its deterministic ODE form); "
                        "default: the model's (the shipped qm9: sde-dpm2m; trained models: ancestral)")
    p.add_argument("--eta", type=_unit_float,
                   help="ancestral: share of the fresh noise per step, 1 = EDM (default), 0 = DDIM")
    p.add_argument("--num-atoms", type=_positive_int,
                   help="fixed molecule size (default: p(M)); for a dummy-atom model, the slots per "
                        "molecule (default: its max_atoms), i.e. the largest size it may generate")
    p.add_argument("--condition", action="append", metavar="NAME=VALUE",
                   help="a conditional model's target property value, e.g. alpha=80 (repeat for "
                        "several); a property not given is drawn per molecule from the training "
                        "distribution for its size. Written into each SDF record / XYZ comment")
    p.add_argument("--size-from", choices=["joint", "marginal"], default="joint",
                   help="with --condition and no --num-atoms: molecule sizes from p(M | the requested "
                        "values), as EDM's joint p(c, M) (joint, default), or from p(M) (marginal)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=256, help="molecules per batch")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the network's precision: auto (default) = bf16 autocast on CPUs with AMX "
                        "(1.3-1.8x faster, same molecules in distribution: docs/speed.md), float32 "
                        "elsewhere; fp32 = always float32 (bit-reproducible across machines); bf16")
    p.add_argument("--no-cuda-graph", action="store_true",
                   help="on a GPU, call the network eagerly instead of replaying a CUDA graph")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--trajectory", metavar="DIR",
                   help="also record how the first K molecules form, into DIR: trajectory.npz "
                   "(per-atom times and positions at every step) and, per molecule, an animated "
                   "GIF and a heat map of each atom's diffusion time")
    p.add_argument("--trajectory-molecules", metavar="K", type=_positive_int, default=4,
                   help="how many molecules --trajectory records (default 4)")
    p.set_defaults(func=_run_sample)


def _run_sample(args) -> int:
    import time

    from tqdm import tqdm

    from .data.files import MoleculeWriter
    from .pipeline import EAD, drop_empty, split_result

    out = Path(args.output)
    if out.suffix.lower() not in (".sdf", ".xyz"):
        raise EADError(f"output must end in .sdf or .xyz, got {out.name}")
    if not out.parent.exists():
        raise EADError(f"output folder {out.parent} does not exist")
    model = EAD.from_pretrained(args.model, device=args.device)
    model.cuda_graph = not args.no_cuda_graph
    model.autocast = args.precision
    options = dict(steps=args.steps, spacing=args.spacing, window=args.window,
                   async_ratio=args.async_ratio, history=args.history, t_async=args.t_async,
                   update=args.update, eta=args.eta, stall_lag=args.stall_lag)
    schedule = model.make_schedule(args.sampler, **options)  # bad values fail here, before any work
    from .data.properties import check_condition, parse_conditions

    condition = parse_conditions(args.condition)
    check_condition(model.config, condition, args.num)   # before any work
    if args.t_async is not None and args.t_async > model.config.timesteps:
        raise EADError(f"--t-async must be ≤ T = {model.config.timesteps}")
    import numpy as np

    if args.trajectory and Path(args.trajectory).exists() and not Path(args.trajectory).is_dir():
        raise EADError(f"--trajectory {args.trajectory} exists and is not a folder")
    types = np.asarray(model.config.feature_types)
    t0 = time.time()
    calls, done, empty = 0, 0, 0
    bar = tqdm(total=args.num, disable=args.quiet, desc=f"sample ({schedule.name})", unit="mol")
    settings = {**schedule.settings(), "seed": args.seed, "model": str(args.model),
                **({"precision": model.precision} if model.precision else {})}
    recorder = None
    if args.trajectory:
        from .viz.trajectory import TrajectoryRecorder

        # keeps only the first K molecules' atoms: its memory does not grow with -n
        recorder = TrajectoryRecorder.for_model(model, min(args.trajectory_molecules, args.num),
                                                num_atoms=args.num_atoms, settings=settings)
    with MoleculeWriter(out, metadata={f"ead_{k}": v for k, v in settings.items()}) as writer:
        for res, _ in model.sample_batches(args.num, sampler=args.sampler, seed=args.seed,
                                            batch_size=args.batch_size, num_atoms=args.num_atoms,
                                            on_step=recorder, condition=condition,
                                            size_from=args.size_from, **options):
            mols, targets, dropped = drop_empty(split_result(res, types), res.info.get("condition", {}))
            empty += dropped
            props = [{k: f"{v[i]:.6g}" for k, v in targets.items()} for i in range(len(mols))]
            writer.write(mols, names=[f"ead_{done + i}" for i in range(len(mols))], properties=props)
            done += len(mols)
            calls += res.network_calls
            bar.update(len(res.num_atoms))
            if recorder is not None:
                recorder.end_batch(res)
    bar.close()
    dt = time.time() - t0
    if not args.quiet:
        print(f"wrote {done} molecules to {out} ({schedule.name}, {settings['steps']} steps, "
              f"{calls} network calls, {model.precision or 'fp32'}, {dt:.1f} s, {done / dt:.2f} mol/s)")
        if model.config.dummy:
            print(f"{empty} of {args.num} molecules came out with every slot absent and were left out")
    if recorder is not None:
        from .viz.render import write_trajectory_outputs

        files = write_trajectory_outputs(recorder.trajectories, args.trajectory)
        if not args.quiet:
            print(f"recorded {len(recorder.trajectories)} trajectories in {args.trajectory}: "
                  f"{files[0].name}, {len(files) - 1} pictures (molecule_*.gif, molecule_*_times.png)")
    return 0


# ------------------------------------------------------------------------------------ view
def _add_view(sub):
    p = sub.add_parser("view", help="draw molecules: a grid PNG and an offline 3D HTML page",
                       description="Draw the molecules of an SDF/XYZ file or folder. OUT_PREFIX.png: "
                       "RDKit 2D depictions in a grid, with validity and SMILES under each (invalid "
                       "molecules are drawn from their atoms as they are). OUT_PREFIX.html: one "
                       "self-contained page with an interactive 3D view per molecule (drag to "
                       "rotate, scroll to zoom) that opens offline. Bonds and validity follow the "
                       "evaluation protocol (bonds from distances).")
    p.add_argument("file", metavar="FILE", help="SDF, MOL or XYZ file (gzipped too), or a folder of them")
    p.add_argument("-o", "--output", metavar="OUT_PREFIX",
                   help="write OUT_PREFIX.png and OUT_PREFIX.html (default: FILE without its extension)")
    p.add_argument("--max-molecules", metavar="N", type=_positive_int, default=48,
                   help="draw the first N molecules (default 48)")
    p.add_argument("--columns", metavar="C", type=_positive_int, default=4,
                   help="molecules per row in the PNG (default 4)")
    p.add_argument("--quiet", action="store_true", help="print nothing when all went well")
    p.set_defaults(func=_run_view)


def _run_view(args) -> int:
    from .viz.view import view_file

    if not Path(args.file).exists():
        raise EADError(f"no such file or folder: {args.file}")
    res = view_file(args.file, args.output, max_molecules=args.max_molecules, columns=args.columns)
    if not args.quiet:
        png, page = res["files"]
        print(f"drew {res['shown']} of {res['molecules']} molecules ({res['valid']} valid): {png} and {page}"
              + (f"; skipped {res['skipped']} unreadable records" if res["skipped"] else ""))
    return 0


# ------------------------------------------------------------------------------------ evaluate
def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score molecules (SDF/XYZ from any generator) by the EDM protocol",
                       description="Atom/molecule stability, validity, uniqueness, novelty and "
                       "connectivity with bonds inferred from distances, plus optional checks.")
    try:
        from .metrics.evaluate import add_arguments
    except ImportError:  # metrics module not installed in this build
        add_arguments = None
    if add_arguments is not None:
        add_arguments(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from .metrics.evaluate import run

    return int(run(args) or 0)


# ------------------------------------------------------------------------------------ info
def _add_info(sub):
    p = sub.add_parser("info", help="versions, shipped models and the data cache")
    p.add_argument("--model", default=None, help="also describe this model folder")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    import platform

    import torch

    from .config import read_model_meta
    from .data.qm9 import cache_dir
    from .pipeline import PRETRAINED_DIR, available_models

    print(f"ead {__version__}  python {platform.python_version()}  torch {torch.__version__}  "
          f"cuda {'yes' if torch.cuda.is_available() else 'no'}")
    print(f"data cache: {cache_dir()}")
    models = available_models()
    print(f"shipped models: {', '.join(models) or 'none'} ({PRETRAINED_DIR})")
    for name in ([args.model] if args.model else models):
        cfg_path = (Path(name) if Path(name).exists() else PRETRAINED_DIR / name) / "config.json"
        meta = read_model_meta(cfg_path)
        m = meta.get("model", {})
        print(f"  {name}: preset {m.get('preset')} ({m.get('layers')}×{m.get('hidden')}), window C="
              f"{m.get('window')}, T={m.get('timesteps')}, sampler defaults {meta.get('sampler_defaults')}")
        if m.get("context"):
            print(f"    conditioned on: {', '.join(m['context'])} (ead sample --condition NAME=VALUE)")
        if m.get("size_mode") == "dummy":
            print(f"    sizes: dummy atoms, {m.get('max_atoms')} slots per molecule, absent atoms' "
                  f"training times +{m.get('absent_bias')}")
        if meta.get("card"):
            print(f"    training: {_card_summary(meta['card'])}")
    return 0


def _card_summary(card: dict) -> str:
    """One line from a model card: steps, molecules, hours, and each stretch of its training."""
    segs = [*card.get("continues", []), {"steps": card.get("training_steps"), "batch_size": card.get("batch_size"),
                                         "device": card.get("device", "?"), "hours": card.get("training_hours")}]
    steps = card.get("total_training_steps", card.get("training_steps"))
    hours = card.get("total_training_hours", card.get("training_hours"))
    seen = card.get("total_molecules_seen") or (steps or 0) * (card.get("batch_size") or 0)
    parts = "; then ".join(f"{s['steps']:,} × {s['batch_size']} on {s.get('device', '?')}" for s in segs
                           if s.get("steps") is not None)
    return (f"{steps:,} steps, {seen / 1e6:.2f} M molecules, {hours} h ({parts}); lr {card.get('lr')}, "
            f"EMA {card.get('ema_decay')}; measured quality: docs/model-card.md")


# ------------------------------------------------------------------------------------ bench
def _add_bench(sub):
    p = sub.add_parser("bench", help="speed: training step, sampling throughput, memory, FLOPs, vs EDM layout",
                       description="Time the denoiser on this machine (paper and small presets) "
                       "against a dense EDM-layout baseline with the same weights. Sampling "
                       "throughput is extrapolated from timed network calls (the output says so).")
    from .bench import add_arguments

    add_arguments(p)
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from .bench import run_from_args

    return run_from_args(args)


# ------------------------------------------------------------------------------------ completion
def _add_completion(sub):
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Tab completion for ead's verbs and options. Install with\n"
                       "  eval \"$(ead completion bash)\"   # in ~/.bashrc\n"
                       "  eval \"$(ead completion zsh)\"    # in ~/.zshrc (uses bashcompinit)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=_run_completion)


def completion_script(parser: argparse.ArgumentParser, shell: str = "bash") -> str:
    """A bash completion function generated from the parser itself, so it never goes stale:
    verbs first, then each verb's options; option values with choices complete to those choices,
    everything else to file names."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verbs = [v for v in sub.choices]
    cases, choice_cases = [], []
    for verb, vp in sub.choices.items():
        opts = sorted(o for a in vp._actions for o in a.option_strings)
        cases.append(f'    {verb}) opts="{" ".join(opts)}" ;;')
        for a in vp._actions:
            if a.option_strings and a.choices:
                for o in a.option_strings:
                    choice_cases.append(f'    "{verb} {o}") COMPREPLY=($(compgen -W "{" ".join(map(str, a.choices))}" -- "$cur")); return ;;')
    lines = [
        "# ead tab completion (generated by `ead completion`)",
        *(["autoload -U +X bashcompinit && bashcompinit"] if shell == "zsh" else []),
        "_ead_complete() {",
        '  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" verb="${COMP_WORDS[1]}" opts',
        "  if [ \"$COMP_CWORD\" -eq 1 ]; then",
        f'    COMPREPLY=($(compgen -W "{" ".join(verbs)} --help --version" -- "$cur")); return',
        "  fi",
        '  case "$verb $prev" in',
        *choice_cases,
        '  esac',
        '  if [ "$COMP_CWORD" -eq 2 ] && [ "$verb" = completion ]; then COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return; fi',
        '  case "$verb" in',
        *cases,
        '    *) opts="" ;;',
        '  esac',
        '  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi',
        "}",
        "complete -o filenames -F _ead_complete ead",
    ]
    return "\n".join(lines) + "\n"


def _run_completion(args) -> int:
    print(completion_script(build_parser(), args.shell), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ead", description="Equivariant Asynchronous Diffusion for 3D molecules "
                     "(An et al., arXiv 2603.10093): train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"ead {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_sample(sub)
    _add_view(sub)
    _add_evaluate(sub)
    _add_predictor(sub)
    _add_info(sub)
    _add_bench(sub)
    _add_completion(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already reported in one line)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except EADError as e:
        print(f"ead: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ead: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
