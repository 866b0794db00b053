"""EAD: the user-facing model object. Load, save and sample.

    from ead import EAD
    model = EAD.from_pretrained("qm9")                 # the shipped model
    mols = model.sample(100, sampler="adaptive", steps=200, seed=0)   # RDKit molecules, 3D
    model.to("cuda", dtype=torch.bfloat16)             # as a torch module moves
    mols = model.sample(100, progress=True)            # a fresh seed, in each molecule's ead_seed

Weights are safetensors, the configuration JSON: loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .data.batch import FeatureEncoder
from .data.elements import ABSENT
from .data.properties import check_condition, normalise, resolve_targets, sizes_given_targets
from .device import resolve_device, resolve_precision
from .diffusion.noise import NoiseSchedule
from .data.fragment import load_fragment
from .diffusion.sampler import FixedAtoms, SampleResult, run_sampler
from .diffusion.schedules import SAMPLERS, SamplerConfig, build_schedule
from .errors import EADError
from .io import write_atomic
from .progress import Progress
from .model.build import build_denoiser
from .model.config import ModelConfig, check_sampling_batch, check_weights, read_model_meta, trained_with_fragments
from .model.egnn import Denoiser
from .version import __version__

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
# A model's sampler defaults when its config names none are SamplerConfig's: the paper's adaptive
# sampler at steps = T (its own T, not 1000: a model trained with --timesteps 500 must sample with
# its defaults). The shipped QM9 model overrides them with the few-step setting its card measures.

# The keyword arguments of the sampling methods besides the sampler's settings (SamplerConfig's
# fields): an unknown keyword is a TypeError naming the method called, as a Python call would be.
SAMPLE_OPTIONS = ("sampler", "steps", "seed", "generator", "batch_size", "num_atoms", "condition", "fragment",
                  "size_from", "guide", "guidance", "on_step", "progress")
DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16"}   # the network's precision, torch's names
# Growing a fragment with a model not trained with held fragments: the Langevin corrector amplifies
# its off-distribution predictions (measured on QM9 fragments: 76 % of trajectories diverged with
# the shipped corrector setting, 7 % with this one, docs/fragments.md), so a corrector in the
# model's sampler defaults gives way to this setting unless the call sets one of its fields.
FRAGMENT_FALLBACK = {"steps": 100, "update": "sde-dpm2m", "corrector_steps": 0}


def check_options(method: str, options: dict) -> None:
    """A TypeError for keywords `method` does not take, listing those it does."""
    known = set(SAMPLE_OPTIONS) | set(SamplerConfig.names())
    unknown = sorted(set(options) - known)
    if unknown:
        hint = (" (move the model with .to(device, dtype) instead)"
                if set(unknown) & {"device", "dtype", "torch_dtype"} else "")
        settings = [k for k in SamplerConfig.names() if k not in SAMPLE_OPTIONS]
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}{hint}; it takes "
                        f"{', '.join(SAMPLE_OPTIONS)} and the sampler's {', '.join(settings)}")


def draw_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """The seed a sampling call uses: `seed`; else one drawn from `generator` (the same generator
    state, the same molecules; successive calls differ); else a fresh one. It is recorded with the
    molecules (ead_seed), so any sample can be drawn again with seed=."""
    if seed is not None:
        if generator is not None:
            raise TypeError("give seed= or generator=, not both")
        return int(seed)
    if generator is not None:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    import secrets

    return secrets.randbelow(2**31 - 1)


class EAD:
    """A trained (or fresh) EAD model: configuration, denoiser and noise process."""

    def __init__(self, config: ModelConfig, denoiser: Denoiser | None = None, device=None,
                 sampler_defaults: dict | None = None, card: dict | None = None, dtype=None):
        self.config = config
        self.device = resolve_device(device)
        self.denoiser = (denoiser or build_denoiser(config)).to(self.device).eval()
        self.noise = NoiseSchedule(config.noise_schedule, config.timesteps, config.noise_precision)
        self.encoder = FeatureEncoder(config.feature_types, config.include_charges)
        self.sampler_defaults = sampler_defaults
        self.card = card or {}
        # On a GPU the sampling loop replays the denoiser as one captured CUDA graph per batch
        # (2.1x faster per call on an H200, outputs equal to 3e-7: docs/speed.md); False = eager.
        self.cuda_graph = True
        # None = float32; "bf16" = the network in bfloat16 autocast (the noise process stays fp32);
        # "auto" = bf16 where the CPU has AMX or AVX-512 BF16 (`resolve_precision`; the command line's default)
        self.autocast: str | None = None
        self._accelerated: tuple | None = None
        if dtype is not None:
            self.to(dtype=dtype)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "EAD":
        """Move the model to `device` and/or sample in `dtype` (torch.float32, or torch.bfloat16:
        the network in bfloat16 autocast, the noise process in float32); returns the model, as
        torch's Module.to does."""
        if isinstance(device, torch.dtype):   # model.to(torch.bfloat16)
            device, dtype = None, device
        if device is not None:
            self.device = resolve_device(device)
            self.denoiser.to(self.device)
            self._accelerated = None
        if dtype is not None:
            if dtype not in DTYPES:
                raise TypeError(f"EAD.to() takes dtype torch.float32 or torch.bfloat16, got {dtype}")
            self.autocast = DTYPES[dtype]
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The network's sampling precision (torch.bfloat16 under bf16 autocast)."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def trained_with_fragments(self) -> bool:
        """Whether training held fragments at t = 0, as the card records (`trained_with_fragments`)."""
        return trained_with_fragments(self.card)

    @property
    def sampler_defaults(self) -> dict:
        """The model's sampler settings (a SamplerConfig's set fields), as saved in config.json."""
        return self.sampler_config.to_dict()

    @sampler_defaults.setter
    def sampler_defaults(self, value: dict | SamplerConfig | None) -> None:
        self.sampler_config = (value if isinstance(value, SamplerConfig)
                               else SamplerConfig.from_dict(value, "sampler_defaults fields"))

    # ---------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "qm9", device=None, dtype=None,
                        torch_dtype=None) -> "EAD":
        """Load a model folder (config.json + model.safetensors), or a shipped model by name;
        `device` and `dtype` (or diffusers' `torch_dtype`) as in `to`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(name_or_path)
        if not path.exists() and (PRETRAINED_DIR / str(name_or_path)).is_dir():
            path = PRETRAINED_DIR / str(name_or_path)
        if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
            path = path.parent
        if not path.is_dir():
            raise EADError(f"no model at {name_or_path} (expected a folder with {CONFIG_NAME} and "
                           f"{WEIGHTS_NAME}, or a shipped name: {', '.join(available_models()) or 'none'})")
        meta = read_model_meta(path / CONFIG_NAME)
        config = ModelConfig.from_dict(meta["model"])
        denoiser = build_denoiser(config)
        try:
            state = load_file(str(path / WEIGHTS_NAME))
        except FileNotFoundError:
            raise EADError(f"missing {WEIGHTS_NAME} in {path}") from None
        except (SafetensorError, OSError, ValueError) as e:
            raise EADError(f"corrupt weights {path / WEIGHTS_NAME}: {e}") from None
        check_weights(state, str(path / WEIGHTS_NAME))
        expected = denoiser.state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or extra or bad:
            what = missing[:1] or extra[:1] or bad[:1]
            raise EADError(f"weights in {path} do not fit its config ({len(missing)} missing, "
                           f"{len(extra)} unexpected, {len(bad)} wrong shape; e.g. {what[0]})")
        denoiser.load_state_dict(state)
        return cls(config, denoiser, device, meta.get("sampler_defaults"), meta.get("card"),
                   dtype=dtype or torch_dtype)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.denoiser.state_dict().items()}
        meta = {"format": "ead-model", "version": 1, "ead_version": __version__,
                "model": self.config.to_dict(), "sampler_defaults": self.sampler_defaults,
                "card": self.card}
        write_atomic(path / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "ead"}))
        write_atomic(path / CONFIG_NAME, lambda p: p.write_text(json.dumps(meta, indent=2)))
        return path

    # ---------------------------------------------------------------- sampling
    def sample_sizes(self, n: int, generator: torch.Generator, above: int = 0) -> torch.Tensor:
        """n sizes from p(M), restricted to M > `above` (the atoms of a fragment to grow)."""
        hist = {m: c for m, c in (self.config.size_histogram or {}).items() if int(m) > above}
        if not hist:
            raise EADError("the model has no size histogram p(M)"
                           + (f" above {above} atoms" if above else "") + "; give num_atoms explicitly")
        sizes = torch.tensor(sorted(hist), dtype=torch.long)
        probs = torch.tensor([hist[int(s)] for s in sizes], dtype=torch.float64)
        return sizes[torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)]

    def fragment_options(self, options: dict) -> dict:
        """The sampler options for growing a fragment: `options`, or FRAGMENT_FALLBACK under them
        when this model was not trained with held fragments, its defaults use the corrector and
        the call sets none of the fallback's fields."""
        given = {k for k, v in options.items() if v is not None}
        if (self.trained_with_fragments or not self.sampler_config.corrector_steps
                or given & set(FRAGMENT_FALLBACK)):
            return options
        return {**options, **FRAGMENT_FALLBACK}

    def sampler_settings(self, sampler: str | None = None, **options) -> SamplerConfig:
        """The model's sampler settings with `options` (SamplerConfig's fields) over them; the
        window defaults to the model's C."""
        cfg = self.sampler_config.updated(sampler=sampler, **options)
        return cfg if cfg.window is not None else dataclasses.replace(cfg, window=self.config.window)

    def make_schedule(self, sampler: str | None = None, **options):
        return build_schedule(self.sampler_settings(sampler, **options), self.noise)

    def _network(self):
        """The denoiser call the sampling loop makes: the module itself, or its CUDA-graph /
        autocast wrapper, built once per setting (chosen once per batch, not per step); for a
        model with another target or self-conditioning, wrapped to return ε̂ (a fresh wrapper per
        call of this method: it holds one trajectory's last estimate)."""
        net = self._accelerated_network()
        cfg = self.config
        if cfg.target == "eps" and not cfg.self_condition:
            return net
        from .diffusion.target import EpsilonNetwork

        return EpsilonNetwork(net, self.noise, cfg.target, cfg.self_condition)

    def _accelerated_network(self):
        graph = bool(self.cuda_graph) and self.device.type == "cuda"
        autocast = self.precision
        if not graph and autocast is None:
            return self.denoiser
        key = (graph, autocast)
        if self._accelerated is None or self._accelerated[0] != key:
            from .diffusion.sampler import accelerate

            self._accelerated = (key, accelerate(self.denoiser, autocast=autocast, cuda_graph=graph))
        return self._accelerated[1]

    @property
    def precision(self) -> str | None:
        """The sampling network's precision as it will run: None (float32) or "bf16"."""
        return resolve_precision(self.autocast, self.device)

    def _denoise(self, z_x, z_h, time, mol, num_molecules, edges, context):
        return self._network()(z_x, z_h, time, mol, num_molecules, edges, context)

    def guided_by(self, guide: "EAD | str | os.PathLike", weight: float):
        """The sampling network autoguided by `guide` (a weaker model of the same data and
        features: an earlier checkpoint, a smaller preset), ε = ε_g + w·(ε − ε_g):
        `diffusion/guidance.py`. Two network calls per step. A conditional model may also be
        guided by an unconditional model of the same data: that is classifier-free guidance
        (Ho & Salimans 2022, with the unconditional model trained apart), which pushes each step
        towards the requested property values; the guide network ignores the context."""
        from .diffusion.guidance import Autoguided

        guide = guide if isinstance(guide, EAD) else EAD.from_pretrained(guide, device=self.device)
        mine, theirs = self.config, guide.config
        fields = ["atom_types", "include_charges", "size_mode", "timesteps", "noise_schedule"]
        if theirs.context or not mine.context:   # a conditional guide reads the same normalised context
            fields += ["context", "context_mean", "context_mad"]
        for field in fields:
            if getattr(mine, field) != getattr(theirs, field):
                raise EADError(f"the guide model has another {field} ({getattr(theirs, field)!r}, "
                               f"this model {getattr(mine, field)!r}); it must model the same data")
        guide.autocast = self.autocast
        return Autoguided(self._network(), guide._network(), weight)

    def sample_batches(self, n: int, sampler: str | None = None, seed: int | None = None,
                       batch_size: int = 256, num_atoms=None, on_step=None,
                       condition: dict | None = None, size_from: str = "joint", guide=None,
                       guidance: float = 2.0, generator: torch.Generator | None = None,
                       progress=False, fragment=None, resume: tuple[int, torch.Tensor] | None = None,
                       **options) -> Iterator[tuple[SampleResult, dict]]:
        """Yield (SampleResult, settings) per chunk of ≤ batch_size molecules: memory stays flat
        with n. Reproducible: the same seed gives the same molecules for any batch_size ≥ n;
        without one, a seed is drawn from `generator` or fresh (`draw_seed`), and settings["seed"]
        says which. `progress`: True = a bar on stderr counting the sampler's steps (network calls
        per batch) and the molecules done; a callable gets (steps done, steps estimated,
        molecules=…) after every step.

        A conditional model (config.context) takes `condition`: property -> one value or one per
        molecule (raw units, e.g. {"alpha": 80.0}); a property left out is drawn per molecule from
        the training distribution given its size, as EDM samples. Each chunk's targets are in
        `result.info["condition"]` ({property: [values]}). Without `num_atoms`, the sizes of a
        conditional sample come from p(M | the given values) (`size_from="joint"`, EDM's joint
        p(c, M)) or from p(M) regardless (`size_from="marginal"`).

        `guide` (a model or a model folder) turns on autoguidance with weight `guidance`
        (`guided_by`); each step then costs two network calls, and `network_calls` counts both.

        `fragment` (an RDKit molecule with a 3D conformer, a file, or (positions, atomic numbers))
        grows every molecule from it: its atoms come first, held at t = 0 with their coordinates in
        the fragment's own frame (docs/fragments.md); sizes without `num_atoms` come from p(M > k).
        A model not trained with held fragments grows them without its corrector
        (`fragment_options`).

        Each result's `info["rng_state"]` is the random generator's state after its batch; a stopped
        call continues with the same arguments and `resume=(molecules yielded so far, that state)`,
        which yields the remaining batches exactly as the uninterrupted call would have (`ead sample`
        keeps them to continue a killed run)."""
        check_options("EAD.sample_batches", options)
        if n < 1:
            raise EADError("number of molecules must be ≥ 1")
        seed = draw_seed(seed, generator)
        fragment = None if fragment is None else load_fragment(fragment)
        if fragment is not None:
            options = self.fragment_options(options)
        gen_cpu = torch.Generator().manual_seed(seed)
        if size_from not in ("joint", "marginal"):
            raise EADError(f"size_from must be 'joint' or 'marginal', got {size_from!r}")
        if num_atoms is None and condition and self.config.context and size_from == "joint":
            check_condition(self.config, condition, n)
            sizes = sizes_given_targets(self.config, condition, n, gen_cpu)
        elif num_atoms is None:
            sizes = self.sample_sizes(n, gen_cpu, above=0 if fragment is None else len(fragment))
        else:
            sizes = torch.as_tensor(num_atoms, dtype=torch.long).reshape(-1)
            sizes = sizes.expand(n) if sizes.numel() == 1 else sizes
            if len(sizes) != n or int(sizes.min()) < 1:
                raise EADError("num_atoms must be one positive size or one per molecule")
        if fragment is not None:
            if self.config.dummy:
                raise EADError("growing a fragment needs a model that draws sizes from p(M), not a "
                               "dummy-atom model")
            fragment.check(self.config.atom_types, sizes)
        targets = resolve_targets(self.config, sizes, condition, gen_cpu)
        if self.config.dummy:
            # every molecule gets max_atoms slots (num_atoms, when given, sets the slots instead);
            # the sizes drawn above only chose the targets of properties left unspecified
            sizes = sizes if num_atoms is not None else torch.full((n,), self.config.max_atoms)
        check_sampling_batch(sizes, batch_size)   # before anything is allocated
        gen = torch.Generator(self.device).manual_seed(seed)
        skip = 0
        if resume is not None:
            skip, state = resume
            if skip < 0 or skip >= n or skip % batch_size:
                raise EADError(f"cannot resume after {skip} of {n} molecules in batches of {batch_size}")
            gen.set_state(state)
        network = self.guided_by(guide, guidance) if guide is not None else None
        batches = -(-(n - skip) // batch_size)
        per_batch = self.make_schedule(sampler, **options).settings()["steps"] + 1   # + the decoding call

        # everything above runs at the call (bad options fail there); the batches are drawn lazily
        def chunks():
            bar = Progress(batches * per_batch, f"sample {n}", "step", progress)

            def step(i, t, z_x, z_h):
                if on_step is not None:
                    on_step(i, t, z_x, z_h)
                if i:   # 0 = the initial noise, before any call
                    bar.update(molecules=done)

            done = skip
            for start in range(skip, n, batch_size):
                schedule = self.make_schedule(sampler, **options)
                chunk = sizes[start : start + batch_size].to(self.device)
                context = None
                if targets is not None:
                    part = targets[start : start + batch_size]
                    context = torch.from_numpy(normalise(self.config, part)).to(self.device)
                    context = context.repeat_interleave(chunk, 0)   # per molecule -> per atom
                held = None if fragment is None else FixedAtoms(*fragment.held_atoms(chunk.cpu(), self.encoder.encode))
                net = network or self._network()
                if hasattr(net, "reset"):   # a new trajectory: no estimate carried over
                    net.reset()
                res = run_sampler(net, self.noise, schedule, chunk, self.config.num_features,
                                  len(self.config.feature_types), gen, context=context, fixed=held,
                                  on_step=step if (on_step or progress) else None)
                done += len(chunk)
                left = batches - (start - skip) // batch_size - 1   # later batches take as many steps as this one
                bar.set_total(bar.done + 1 + left * res.network_calls)
                bar.update(1, molecules=done)   # the decoding call
                if not left:
                    bar.close()
                if network is not None:
                    res.network_calls *= network.calls_per_call
                if targets is not None:
                    res.info["condition"] = {k: [float(v) for v in part[:, c]] for c, k in enumerate(self.config.context)}
                res.info["rng_state"] = gen.get_state()
                yield res, {**schedule.settings(), "seed": seed, "model_preset": self.config.preset,
                            **({"precision": self.precision} if self.precision else {}),
                            **({"guidance": float(guidance)} if network is not None else {})}

        return chunks()

    def sample_arrays(self, n: int, **kwargs) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
        """n molecules as (positions [m,3] Å, atomic_numbers [m]) numpy pairs, and the settings;
        the keywords are sample_batches'."""
        check_options("EAD.sample_arrays", kwargs)
        out, settings, calls, targets = [], {}, 0, {}
        types = np.asarray(self.config.feature_types)
        empty, diverged = 0, 0
        for res, settings in self.sample_batches(n, **kwargs):
            mols, chunk_targets, dropped = drop_empty(split_result(res, types), res.info.get("condition", {}))
            mols, chunk_targets, bad = drop_diverged(mols, chunk_targets)
            empty += dropped
            diverged += bad
            out.extend(mols)
            calls += res.network_calls
            for k, v in chunk_targets.items():
                targets.setdefault(k, []).extend(v)
        settings["network_calls"] = calls
        if self.config.dummy:
            settings["empty_dropped"] = empty   # slots all decoded as absent: no molecule
        if diverged:
            settings["diverged_dropped"] = diverged   # non-finite coordinates: not returned
        if targets:
            settings["condition"] = targets   # per molecule: the property values asked for
        return out, settings

    def sample(self, n: int, sampler: str | None = None, steps: int | None = None,
               seed: int | None = None, generator: torch.Generator | None = None, progress=False,
               **kwargs):
        """n RDKit molecules with 3D conformers, bonds from the distance rule (docs/evaluation.md §2),
        named ead_0, ead_1, … as `ead sample` names them; the sampler's settings, the seed among
        them, are stored as molecule properties (ead_seed: pass it as seed= to draw them again).
        Without seed, one is drawn from `generator` or fresh; `progress=True` shows a bar (or a
        callable gets the counts); other keywords: sample_batches' and the sampler's settings."""
        from .metrics.chem import protocol_mol

        check_options("EAD.sample", kwargs)
        arrays, settings = self.sample_arrays(n, sampler=sampler, steps=steps, seed=seed,
                                              generator=generator, progress=progress, **kwargs)
        targets = settings.pop("condition", {})
        mols = []
        for i, (pos, z) in enumerate(arrays):
            m = protocol_mol(pos, z)
            m.SetProp("_Name", f"ead_{i}")
            for k, v in settings.items():
                m.SetProp(f"ead_{k}", str(v))
            for k, v in targets.items():   # a conditional model's target, under the property's name
                m.SetDoubleProp(k, v[i])
            mols.append(m)
        return mols


def split_result(res: SampleResult, feature_types: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The batch's molecules as (positions, atomic numbers) pairs, one per molecule of the batch.
    `feature_types` is the model config's: atoms decoded as ABSENT (dummy-atom models) are dropped
    and the remaining ones re-centred, so a molecule may come out smaller, or empty."""
    pos = res.positions.detach().float().cpu().numpy()
    z = feature_types[res.atom_index.cpu().numpy()]
    bounds = np.concatenate([[0], np.cumsum(res.num_atoms.cpu().numpy())])
    if not (z == ABSENT).any():   # p(M) models, and dummy batches with every slot filled
        return [(pos[a:b].astype(np.float64), z[a:b].astype(np.int64)) for a, b in zip(bounds[:-1], bounds[1:])]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        p, zz = pos[a:b].astype(np.float64), z[a:b].astype(np.int64)
        real = zz != ABSENT
        if not real.all():
            p, zz = p[real], zz[real]
            p = p - p.mean(0) if len(zz) else p
        out.append((p, zz))
    return out


def drop_empty(mols: list, targets: dict) -> tuple[list, dict, int]:
    """`mols` without the empty ones (a dummy-atom model's all-absent slots), the per-molecule
    `targets` ({property: [value per molecule]}) that go with the rest, and how many were dropped."""
    keep = [i for i, (_, z) in enumerate(mols) if len(z)]
    if len(keep) == len(mols):
        return mols, targets, 0
    return [mols[i] for i in keep], {k: [v[i] for i in keep] for k, v in targets.items()}, len(mols) - len(keep)


def drop_diverged(mols: list, targets: dict) -> tuple[list, dict, int]:
    """`mols` without those whose coordinates overflowed to inf/NaN during sampling (a trajectory
    can diverge far from the training distribution, e.g. a fragment the model was not trained to
    hold), with their targets, and how many were dropped. A scorer should count them as failures."""
    keep = [i for i, (pos, _) in enumerate(mols) if np.isfinite(pos).all()]
    if len(keep) == len(mols):
        return mols, targets, 0
    return [mols[i] for i in keep], {k: [v[i] for i in keep] for k, v in targets.items()}, len(mols) - len(keep)


def available_models() -> list[str]:
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_NAME).exists())


__all__ = ["EAD", "SAMPLERS", "available_models"]
