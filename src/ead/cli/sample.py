"""`ead sample`: generate molecules as SDF or XYZ; the sampler's flags come from SamplerConfig."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EADError
from .common import add_config_flags, add_relax_flags, add_threads_flag, config_values, positive_float, positive_int


HELP = "generate molecules as SDF, XYZ or PDB (optionally .gz)"


def add(sub):
    from ..device import PRECISIONS   # torch: loaded for this verb only
    from ..diffusion.schedules import SamplerConfig

    p = sub.add_parser("sample", help=HELP,
                       description="Sample molecules from a trained model with any sampler. "
                       "Defaults come from the model's config.")
    p.add_argument("--model", help="model folder, or a shipped model name (default qm9; with --fragment, "
                   "qm9-fragment: the one trained to grow fragments)")
    p.add_argument("-n", "--num", type=positive_int, default=100, help="number of molecules")
    p.add_argument("-o", "--output", default="samples.sdf",
                   help=".sdf, .xyz or .pdb, optionally .gz (default samples.sdf)")
    add_config_flags(p, SamplerConfig)   # --sampler, --steps, … --eta: SamplerConfig's fields
    p.add_argument("--num-atoms", type=positive_int,
                   help="fixed molecule size (default: p(M)); for a dummy-atom model, the slots per "
                        "molecule (default: its max_atoms), i.e. the largest size it may generate")
    p.add_argument("--fragment", metavar="FRAG",
                   help="grow every molecule from this fragment (SDF/MOL/XYZ with 3D coordinates, the "
                        "first record): its atoms come first, in its order, at its coordinates, held "
                        "at t = 0 while the rest is generated (docs/fragments.md); the size is "
                        "--num-atoms, or the fragment's plus --add, or drawn from p(M) above it")
    p.add_argument("--add", type=positive_int, metavar="K",
                   help="with --fragment: generate K atoms beyond the fragment's")
    add_relax_flags(p, "relax each molecule before writing it: MMFF94 (RDKit; valid molecules only) or "
                    "GFN2-xTB (needs tblite); the records keep the energy drop and RMSD "
                    "(ead_relax_energy_drop_kcal_mol, ead_relax_rmsd_angstrom), and a molecule that "
                    "fails keeps its raw coordinates with ead_relax_error")
    p.add_argument("--condition", action="append", metavar="NAME=VALUE",
                   help="a conditional model's target property value, e.g. alpha=80 (repeat for "
                        "several); a property not given is drawn per molecule from the training "
                        "distribution for its size. Written into each SDF record / XYZ comment")
    p.add_argument("--size-from", choices=["joint", "marginal"], default="joint",
                   help="with --condition and no --num-atoms: molecule sizes from p(M | the requested "
                        "values), as EDM's joint p(c, M) (joint, default), or from p(M) (marginal)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=256, help="molecules per batch")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="the network's precision: auto (default) = bf16 autocast on CPUs with AMX or "
                        "AVX-512 BF16 (1.3-2.2x faster, same molecules in distribution: docs/speed.md), float32 "
                        "elsewhere; fp32 = always float32 (bit-identical for the same seed and thread count; docs/reliability.md); bf16")
    p.add_argument("--no-cuda-graph", action="store_true",
                   help="on a GPU, call the network eagerly instead of replaying a CUDA graph")
    p.add_argument("--guide", metavar="MODEL",
                   help="autoguidance: a weaker model of the same data (an earlier checkpoint's model "
                        "folder, or a smaller preset) whose prediction each step moves away from, "
                        "ε = ε_guide + w·(ε − ε_guide); two network calls per step (docs/autoguidance.md). "
                        "For a conditional model, an unconditional model of the same data (e.g. qm9) "
                        "gives classifier-free guidance towards --condition (docs/conditional.md)")
    p.add_argument("--guidance", type=positive_float, metavar="W",
                   help="autoguidance weight w (default 2; 1 = no guidance); needs --guide")
    add_threads_flag(p)
    p.add_argument("--progress", action="store_true",
                   help="show progress even when stderr is not a terminal (it is off then by default)")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary")
    p.add_argument("--trajectory", metavar="DIR",
                   help="also record how the first K molecules form, into DIR: trajectory.npz "
                   "(per-atom times and positions at every step) and, per molecule, an animated "
                   "GIF and a heat map of each atom's diffusion time")
    p.add_argument("--trajectory-molecules", metavar="K", type=positive_int, default=4,
                   help="how many molecules --trajectory records (default 4)")
    p.set_defaults(func=run)


def default_model(fragment: bool) -> str:
    """The shipped model `ead sample` uses without --model: for growing a fragment the one trained
    with held fragments (docs/fragments.md), when the package has it."""
    from ..pipeline import available_models

    return "qm9-fragment" if fragment and "qm9-fragment" in available_models() else "qm9"


def run(args) -> int:
    import time

    from ..data.files import MoleculeWriter
    from ..data.partial import COUNTERS
    from ..device import set_threads
    from ..diffusion.schedules import SamplerConfig
    from ..pipeline import EAD, drop_diverged, drop_empty, split_result
    from ..progress import showing

    out = Path(args.output)
    if not out.name.lower().removesuffix(".gz").endswith((".sdf", ".xyz", ".pdb")):
        raise EADError(f"output must end in .sdf, .xyz or .pdb (optionally .gz), got {out.name}")
    if not out.parent.exists():
        raise EADError(f"output folder {out.parent} does not exist")
    args.model = args.model or default_model(args.fragment is not None)
    model = EAD.from_pretrained(args.model, device=args.device)
    model.cuda_graph = not args.no_cuda_graph
    model.autocast = args.precision
    options = config_values(args, SamplerConfig)
    del options["sampler"]   # passed on its own
    fragment, num_atoms = fragment_and_size(args, model)
    if fragment is not None:
        options = model.fragment_options(options)
    schedule = model.make_schedule(args.sampler, **options)  # bad values fail here, before any work
    guide = None
    if args.guidance is not None and args.guide is None:
        raise EADError("--guidance needs --guide MODEL")
    if args.guide is not None:
        args.guidance = 2.0 if args.guidance is None else args.guidance
        guide = EAD.from_pretrained(args.guide, device=args.device)
        model.guided_by(guide, args.guidance)   # an incompatible guide fails here, before any work
    from ..data.properties import check_condition, parse_conditions

    condition = parse_conditions(args.condition)
    check_condition(model.config, condition, args.num)   # before any work
    if args.t_async is not None and args.t_async > model.config.timesteps:
        raise EADError(f"--t-async must be ≤ T = {model.config.timesteps}")
    import numpy as np

    if args.trajectory and Path(args.trajectory).exists() and not Path(args.trajectory).is_dir():
        raise EADError(f"--trajectory {args.trajectory} exists and is not a folder")
    if model.device.type == "cpu":   # after every check: bad input gets its one error line alone
        set_threads(args.threads, args.quiet)
    types = np.asarray(model.config.feature_types)
    t0 = time.time()
    settings = {**schedule.settings(), "seed": args.seed, "model": str(args.model),
                **({"precision": model.precision} if model.precision else {}),
                **({"guide": str(args.guide), "guidance": args.guidance} if guide is not None else {})}
    recorder = None
    if args.trajectory:
        from ..viz.trajectory import TrajectoryRecorder

        # keeps only the first K molecules' atoms: its memory does not grow with -n
        recorder = TrajectoryRecorder.for_model(model, min(args.trajectory_molecules, args.num),
                                                num_atoms=num_atoms, settings=settings)
    store, finished = open_store(args, out, model, guide, schedule.settings())
    before, totals, state = store.summary()   # what a stopped run kept: molecules, counters, generator
    if finished and not args.quiet:
        print(f"continuing a stopped run: {before} molecules in {finished} batches kept in {store.folder}",
              file=sys.stderr)
    skip = min(finished * args.batch_size, args.num)
    new = 0
    try:
        if skip < args.num:
            import torch

            resume = (skip, torch.from_numpy(state)) if finished else None
            batches = model.sample_batches(args.num, sampler=args.sampler, seed=args.seed,
                                           batch_size=args.batch_size, num_atoms=num_atoms,
                                           fragment=fragment, on_step=recorder, condition=condition,
                                           size_from=args.size_from, guide=guide,
                                           guidance=args.guidance or 1.0, resume=resume,
                                           progress=showing(args.quiet, args.progress), **options)
            for index, (res, _) in enumerate(batches, start=finished):
                mols, targets, dropped = drop_empty(split_result(res, types), res.info.get("condition", {}))
                mols, targets, bad = drop_diverged(mols, targets)
                # each record says what its batch cost: the adaptive loop's calls vary with the batch
                props = [{**{k: f"{v[i]:.6g}" for k, v in targets.items()},
                          "ead_network_calls": str(res.network_calls)} for i in range(len(mols))]
                mols, props = finished_records(mols, props, args)
                counters = {"network_calls": res.network_calls, "empty": dropped, "diverged": bad}
                store.save(index, mols, props, counters, res.info["rng_state"].numpy())
                totals = {k: totals[k] + counters[k] for k in COUNTERS}
                new += len(mols)
                if recorder is not None:
                    recorder.end_batch(res)
    except BaseException:
        if not store.count():
            store.remove()   # nothing finished (e.g. a batch too large to allocate): no folder left behind
        elif not args.quiet:
            print(f"{new + before} molecules sampled so far are kept in {store.folder}: the same command "
                  "continues the run", file=sys.stderr)
        raise
    done = 0
    with MoleculeWriter(out, metadata={f"ead_{k}": v for k, v in settings.items()}) as writer:
        for mols, props, _, _ in store.batches():
            writer.write(mols, names=[f"ead_{done + i}" for i in range(len(mols))], properties=props)
            done += len(mols)
    store.remove()
    calls, empty, diverged = (totals[k] for k in COUNTERS)
    dt = time.time() - t0
    if not args.quiet:
        resumed = f"; {before} of them from the stopped run" if before else ""
        print(f"wrote {done} molecules to {out} (model {args.model}, {schedule.name}, {settings['steps']} steps, "
              f"{calls} network calls, {model.precision or 'fp32'}, {dt:.1f} s, {new / dt:.2f} mol/s{resumed})",
              file=sys.stderr)
        if model.config.dummy:
            print(f"{empty} of {args.num} molecules came out with every slot absent and were left out",
                  file=sys.stderr)
    if diverged:   # said even with --quiet: the file holds fewer molecules than asked for
        print(f"warning: {diverged} of {args.num} molecules diverged (coordinates overflowed to inf/NaN) "
              "and were not written; count them as failures when scoring the sample", file=sys.stderr)
        if fragment is not None and settings.get("corrector_steps") and not model.trained_with_fragments:
            # the corrector was asked for (the pipeline leaves it out otherwise, FRAGMENT_FALLBACK):
            # on such a model it amplifies the off-distribution predictions
            print("hint: with a fragment, a model not trained with --fragment-share diverges far less "
                  "without the corrector: --corrector-steps 0 --steps 100 --update sde-dpm2m, what it "
                  "uses when none of the three is given (docs/fragments.md)", file=sys.stderr)
    if recorder is not None:
        from ..viz.render import write_trajectory_outputs

        files = write_trajectory_outputs(recorder.trajectories, args.trajectory,
                                         progress=showing(args.quiet, args.progress))
        if not args.quiet:
            print(f"recorded {len(recorder.trajectories)} trajectories in {args.trajectory}: "
                  f"{files[0].name}, {len(files) - 1} pictures (molecule_*.gif, molecule_*_times.png)",
                  file=sys.stderr)
    return 0


# settings that do not change the molecules: a stopped run continues with other values of these
NOT_IDENTITY = ("quiet", "progress", "threads", "output", "relax_workers", "no_cuda_graph",
                "trajectory", "trajectory_molecules")


def open_store(args, out, model, guide, sampler_settings):
    """(the run's PartialSample, how many of its batches are finished): a stopped
    run of the same command continues; with --trajectory, which records the first molecules, it
    starts again."""
    import hashlib

    import torch

    from ..data.partial import PartialSample

    def digest(module) -> str:
        h = hashlib.sha256()
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    identity = {k: v for k, v in vars(args).items()   # the flags (argparse adds objects of its own)
                if k not in NOT_IDENTITY and isinstance(v, (str, int, float, list, type(None)))}
    identity.update(sampler_settings=sampler_settings, device=model.device.type,
                    network_precision=model.precision, weights=digest(model.denoiser))
    if guide is not None:
        identity["guide_weights"] = digest(guide.denoiser)
    if args.fragment is not None:
        identity["fragment_file"] = hashlib.sha256(Path(args.fragment).read_bytes()).hexdigest()
    store = PartialSample(out, identity)
    finished = store.open()
    if finished and args.trajectory:
        if not args.quiet:
            print(f"--trajectory records the first molecules: sampling again from the start "
                  f"(a stopped run's {finished} batches in {store.folder} are dropped)", file=sys.stderr)
        store.remove()
        finished = store.open()
    return store, finished


def fragment_and_size(args, model):
    """(the --fragment's atoms or None, the molecule size): --num-atoms, or the fragment's size plus
    --add; a fragment the model cannot grow fails here, before any work."""
    if args.fragment is None:
        if args.add is not None:
            raise EADError("--add needs --fragment FRAG")
        return None, args.num_atoms
    from ..data.fragment import load_fragment

    fragment = load_fragment(args.fragment)
    if args.add is not None and args.num_atoms is not None:
        raise EADError("give --num-atoms M or --add K, not both")
    num_atoms = len(fragment) + args.add if args.add is not None else args.num_atoms
    fragment.check(model.config.atom_types, [len(fragment) + 1 if num_atoms is None else num_atoms])
    return fragment, num_atoms


def finished_records(mols, props, args):
    """The batch as written: relaxed with --relax (fields say how, or why not), and each record
    with its SMILES and validity (of the coordinates written)."""
    from ..metrics.chem import record_fields
    from ..progress import showing

    if args.relax:
        from ..metrics.relax import relaxed_records

        mols, relaxed = relaxed_records(mols, args.relax, args.relax_workers,
                                        showing(args.quiet, args.progress))
        props = [{**p, **r} for p, r in zip(props, relaxed)]
    return mols, [{**p, **record_fields(pos, z)} for p, (pos, z) in zip(props, mols)]
