"""`ead train`: train EAD (or EDM with --window 0) on QM9, GEOM-Drugs or your molecules."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from ..errors import EADError
from .common import add_threads_flag, default_of, nonneg_int, positive_float, positive_int, unit_float

HELP = "train EAD (or EDM with --window 0) on QM9 or your molecules"


def add(sub):
    from ..diffusion.loss import LOSS_WEIGHTS, TIME_SAMPLINGS   # torch: loaded for this verb only
    from ..diffusion.noise import SCHEDULES
    from ..model.config import PRESETS, SIZE_MODES, TARGETS
    from ..train.config import LR_SCHEDULES, TrainConfig

    D = functools.partial(default_of, TrainConfig)   # every default is the config's

    p = sub.add_parser("train", help=HELP,
                       description="Train EAD with Algorithm 1 (per-atom times within ±C). Resumes "
                       "automatically from the last checkpoint in --run-dir.")
    p.add_argument("--data", default=D("data"),
                   help="'qm9' (default), an SDF/XYZ file or folder, or EDM's processed GEOM-Drugs array "
                        "geom_drugs_30.npy (its geom_permutation.npy beside it gives EDM's split)")
    p.add_argument("--run-dir", default=D("run_dir"), help="checkpoints, logs and the exported model")
    p.add_argument("--remove-h", action="store_true", help="train without hydrogens")
    p.add_argument("--preset", default=D("preset"), choices=list(PRESETS), help=f"network size (default {D('preset')})")
    p.add_argument("--layers", type=positive_int, help="override the preset's depth")
    p.add_argument("--hidden", type=positive_int, help="override the preset's width")
    p.add_argument("--window", type=nonneg_int, default=D("window"), help=f"EAD's window C (0 = EDM); default {D('window')}")
    p.add_argument("--noise-schedule", default=D("noise_schedule"), choices=list(SCHEDULES))
    p.add_argument("--timesteps", type=positive_int, default=D("timesteps"), help=f"T (default {D('timesteps')})")
    p.add_argument("--batch-size", type=positive_int, default=D("batch_size"))
    p.add_argument("--lr", type=positive_float, default=D("lr"),
                   help="peak learning rate, reached after --warmup-steps (default %(default)s; EDM: 1e-4; docs/recipe.md)")
    p.add_argument("--ema-decay", type=float, default=D("ema_decay"))
    p.add_argument("--no-clip-grad", action="store_true", help="turn off EDM's adaptive clipping")
    p.add_argument("--max-steps", type=nonneg_int, default=D("max_steps"))
    p.add_argument("--max-hours", type=positive_float, help="stop (with a checkpoint) once the run has trained this long in all: a resumed run counts "
                        "its earlier time")
    p.add_argument("--ckpt-every", type=positive_int, default=D("ckpt_every"))
    p.add_argument("--keep-checkpoints", type=nonneg_int, default=D("keep_checkpoints"),
                   help=f"checkpoints kept on disk (default {D('keep_checkpoints')}; 0 = all, for comparisons at equal steps)")
    p.add_argument("--init-from", metavar="RUN",
                   help="start from another run's last checkpoint (weights, EMA, optimizer), e.g. to "
                        "continue on other hardware or with another batch size, or to make an unconditional "
                        "model conditional (with --condition: the new inputs start at zero) or a p(M) model a "
                        "dummy-atom one (with --size-mode dummy); recorded in the card")
    p.add_argument("--log-every", type=positive_int, default=D("log_every"))
    p.add_argument("--val-every", type=nonneg_int, default=D("val_every"), help="0 = no validation loss")
    p.add_argument("--sample-every", type=nonneg_int, default=D("sample_every"),
                   help="sample and measure stability every N steps (0 = never)")
    p.add_argument("--seed", type=int, default=D("seed"))
    p.add_argument("--bucket", action="store_true", help="batch molecules of similar size together")
    p.add_argument("--accelerator", default=D("accelerator"), help="auto | cpu | cuda (Lightning Fabric)")
    p.add_argument("--devices", type=positive_int, default=D("devices"), help="GPUs (or processes) per node")
    p.add_argument("--num-nodes", type=positive_int, default=D("num_nodes"))
    p.add_argument("--precision", default=D("precision"),
                   help="Fabric's training precision (32-true, bf16-mixed, …) or auto: a resumed run keeps its "
                        "own, a new one trains in bf16-mixed on a CPU with bfloat16 units (AMX or AVX-512 BF16) "
                        "and in 32-true elsewhere (default %(default)s; docs/speed.md)")
    add_threads_flag(p)
    p.add_argument("--condition", metavar="PROPS",
                   help="train a conditional model on these properties, comma-separated: QM9's alpha, "
                        "gap, homo, lumo, mu, Cv (EDM's units), or numeric SD data fields of your SDF")
    p.add_argument("--condition-split", choices=["second", "first", "all"], default=D("condition_split"),
                   help="QM9 molecules a conditional model trains on: EDM's second half of the training "
                        "split (default; the first trains the property predictor) or all")
    p.add_argument("--charges", choices=["on", "off"],
                   help="the atomic-number input feature Z/10 (EDM's include_charges); default: on for "
                        "QM9 and your files, off for GEOM-Drugs, as EDM trains them")
    p.add_argument("--size-mode", choices=list(SIZE_MODES), default=D("size_mode"),
                   help="how the model sizes its molecules: prior (default, EDM) = M drawn from the "
                        "data's p(M) at sampling; dummy = every molecule is --max-atoms slots and an "
                        "extra 'absent' type marks the empty ones, so the network chooses the size "
                        "(docs/method.md §8, docs/dummy-atoms.md)")
    p.add_argument("--max-atoms", type=positive_int,
                   help="dummy mode: slots per molecule (default: the largest molecule in the data)")
    p.add_argument("--absent-bias", type=nonneg_int,
                   help="dummy mode: time steps added to absent atoms' times in training, so they "
                        "are noisier than the real atoms around them (default: the window C)")
    p.add_argument("--filter-size", type=positive_int, metavar="N",
                   help="train (and validate) only on molecules of at most N atoms, counted after "
                        "--remove-h; EDM trains GEOM-Drugs this way with --filter_molecule_size")
    p.add_argument("--max-molecule-atoms", type=positive_int, metavar="N",
                   help="skip training molecules of more than N atoms, counted on stderr (default: what "
                        "the network's width allows, 512 for the paper preset; its edges grow as N²)")
    p.add_argument("--allow-changes", action="store_true",
                   help="resume although training settings changed (batch size, lr, recipe, …); each "
                        "change is recorded at its step in the checkpoint and the model card. Without "
                        "it such a resume is refused; --max-steps, --max-hours, --threads, --quiet and "
                        "the checkpoint, log, validation and sampling cadences may always change")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the log's numbers (loss, grad norm, validation loss, sampled "
                        "stability) as TensorBoard scalars to RUN_DIR/tensorboard (needs the tensorboard "
                        "package); log.csv is always written")
    p.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default=D("lr_schedule"),
                   help="constant (EDM, default) or cosine: from --lr down to 0 at --max-steps")
    p.add_argument("--warmup-steps", type=nonneg_int, default=D("warmup_steps"),
                   help="linear learning-rate warm-up over the first N steps (default %(default)s; EDM: 0)")
    p.add_argument("--loss-weight", choices=list(LOSS_WEIGHTS), default=D("loss_weight"),
                   help="weight of each atom's error over t: uniform (EDM, default) or min-snr "
                        "(the clean-data weight SNR capped at γ, Hang et al. 2023; on ε: min(SNR, γ)/SNR)")
    p.add_argument("--min-snr-gamma", type=positive_float, default=D("min_snr_gamma"),
                   help=f"γ of --loss-weight min-snr (default {D('min_snr_gamma')})")
    p.add_argument("--time-sampling", choices=list(TIME_SAMPLINGS), default=D("time_sampling"),
                   help="how each molecule's training time t* is drawn: uniform (EDM, default) or "
                        "low-noise (t* = ⌊(T+1)·u²⌋: more training near the data)")
    p.add_argument("--target", choices=list(TARGETS), default=D("target"),
                   help="what the network predicts: eps (the noise, EDM, default), x0 (the clean "
                        "molecule), v (α·ε − σ·x0) or x0-types (ε for the positions, x0 for the atom "
                        "types and charges); the loss is the mean squared error of that target")
    p.add_argument("--rbf", type=nonneg_int, default=D("rbf"), metavar="K",
                   help="also give every layer K Gaussian radial-basis features of each atom pair's "
                        "distance (0-10 Å) beside EDM's d² (default 0 = off; e.g. 16)")
    p.add_argument("--self-condition", action="store_true",
                   help="self-conditioning: the network also reads its previous estimate of the clean "
                        "molecule (in training from a first pass without gradient on half the batches; "
                        "in sampling from the previous call, so sampling costs no extra call)")
    p.add_argument("--fragment-share", type=unit_float, default=D("fragment_share"), metavar="P",
                   help="for a share P of the molecules, hold a random connected set of atoms at t = 0 "
                        "as clean context, left out of the loss, so that growing a fragment "
                        "(ead sample --fragment) is what the model learned (default 0 = off; "
                        "docs/fragments.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network for training: a faster step for small networks (1.2x "
                        "for tiny), checked against the eager loss before the first step and refused "
                        "where they differ (small and paper with torch 2.13); needs a C++ compiler on CPUs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.config import TrainConfig
    from ..train.generator import train

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
                      lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
                      loss_weight=args.loss_weight, min_snr_gamma=args.min_snr_gamma,
                      time_sampling=args.time_sampling, compile=args.compile, target=args.target,
                      rbf=args.rbf, self_condition=args.self_condition,
                      max_molecule_atoms=args.max_molecule_atoms, allow_changes=args.allow_changes,
                      fragment_share=args.fragment_share,
                      include_charges=None if args.charges is None else args.charges == "on",
                      condition=tuple(c.strip() for c in (args.condition or "").split(",") if c.strip()))
    if args.data != "qm9" and not Path(args.data).exists():
        raise EADError(f"no such file or folder: {args.data}")
    s = train(cfg)
    if s["rank"] != 0:
        return 0
    print(f"trained steps {s['start_step']} → {s['step']}"
          + (f", loss {s['first_loss']:.4f} → {s['last_loss']:.4f}" if "last_loss" in s else "")
          + f"; model in {s['model_dir']}", file=sys.stderr)
    return 0
