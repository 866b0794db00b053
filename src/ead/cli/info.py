"""`ead info`: versions, shipped models and the data cache."""

from __future__ import annotations

from pathlib import Path

from ..version import __version__

HELP = "versions, shipped models and the data cache"


def add(sub):
    p = sub.add_parser("info", help=HELP)
    p.add_argument("--model", default=None, help="also describe this model folder")
    p.set_defaults(func=run)


def run(args) -> int:
    import platform

    import torch

    from ..model.config import read_model_meta, trained_with_fragments
    from ..data.qm9 import cache_dir
    from ..pipeline import PRETRAINED_DIR, available_models

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
        recipe = [f"predicts {m['target']}" if m.get("target", "eps") != "eps" else "",
                  f"{m['rbf']} radial-basis distance features" if m.get("rbf") else "",
                  "self-conditioned" if m.get("self_condition") else ""]
        if any(recipe):
            print(f"    network: {', '.join(r for r in recipe if r)} (docs/recipe.md)")
        if m.get("size_mode") == "dummy":
            print(f"    sizes: dummy atoms, {m.get('max_atoms')} slots per molecule, absent atoms' "
                  f"training times +{m.get('absent_bias')}")
        if meta.get("card"):
            shipped = cfg_path.parent.parent.resolve() == PRETRAINED_DIR.resolve()
            print(f"    training: {_card_summary(meta['card'], shipped)}")
            if meta["card"].get("recipe"):   # the recipe options the run changed from EDM's
                print(f"    training recipe: {', '.join(f'{k} {v}' for k, v in meta['card']['recipe'].items())}"
                      + (" (grows fragments in distribution: docs/fragments.md)"
                         if trained_with_fragments(meta["card"]) else ""))
    return 0


def _amount(molecules: int) -> str:
    return f"{molecules / 1e6:.2f} M molecules" if molecules >= 100_000 else f"{molecules:,} molecules"


def _duration(hours) -> str:
    if hours is None:
        return "? h"
    if hours >= 0.1:
        return f"{hours} h"
    return f"{hours * 60:.0f} min" if hours * 60 >= 1 else "under a minute"


def _card_summary(card: dict, shipped: bool = True) -> str:
    """One line from a model card: steps, molecules, hours, and each stretch of its training; the
    shipped models' measured quality is in docs/model-card.md (the fragment-trained one's in
    docs/fragments.md), a model trained here has no such page (its data is named instead)."""
    segs = [*card.get("continues", []), {"steps": card.get("training_steps"), "batch_size": card.get("batch_size"),
                                         "device": card.get("device", "?"), "hours": card.get("training_hours")}]
    steps = card.get("total_training_steps", card.get("training_steps"))
    hours = card.get("total_training_hours", card.get("training_hours"))
    seen = card.get("total_molecules_seen") or (steps or 0) * (card.get("batch_size") or 0)
    parts = "; then ".join(f"{s['steps']:,} × {s['batch_size']} on {s.get('device', '?')}" for s in segs
                           if s.get("steps") is not None)
    from ..model.config import trained_with_fragments

    page = "docs/fragments.md" if trained_with_fragments(card) else "docs/model-card.md"
    tail = (f"measured quality: {page}" if shipped else
            (f"data {card['data']}; " if card.get("data") else "") + "quality: `ead sample`, then `ead evaluate`")
    return (f"{steps:,} steps, {_amount(seen)}, {_duration(hours)} ({parts}); lr {card.get('lr')}, "
            f"EMA {card.get('ema_decay')}; {tail}")
