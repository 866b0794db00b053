"""The property predictor that scores conditional generation (docs/method.md §9, as EDM's "property
classifier"): an EGNN over the molecule's atoms (element features, fully connected graph), a
node MLP, a sum over the atoms and a graph MLP to one number — the property normalised as
(value − mean) / MAD. Invariant to rotations, translations and atom order by construction."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.batch import FeatureEncoder, as_molecule_set, collate
from ..data.elements import QM9_TYPES
from ..errors import EADError
from ..io import read_json, write_atomic
from ..version import __version__
from .config import check_json, check_parameters, check_weights, dataclass_schema
from .egnn import EGNN, segment_sum

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


class PropertyPredictor(nn.Module):
    def __init__(self, num_features: int, hidden: int = 128, layers: int = 7, attention: bool = True,
                 tanh: bool = False, coords_range: float = 15.0):
        super().__init__()
        self.egnn = EGNN(num_features, hidden, layers, attention=attention, tanh=tanh,
                         coords_range=coords_range, out_features=hidden)
        self.node_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.graph_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, h: torch.Tensor, mol: torch.Tensor, num_molecules: int,
                edge_index: torch.Tensor) -> torch.Tensor:
        """x [N,3] Å, h [N,F] element features, mol [N] -> [B] normalised property values."""
        h_out, _ = self.egnn(h, x, edge_index)
        pooled = segment_sum(self.node_mlp(h_out), mol, num_molecules)
        return self.graph_mlp(pooled).squeeze(-1)


@dataclass
class PredictorConfig:
    """What a trained predictor needs to run (saved as JSON beside its safetensors weights)."""
    property: str = "alpha"
    unit: str = ""
    mean: float = 0.0
    mad: float = 1.0
    atom_types: tuple[int, ...] = QM9_TYPES
    include_charges: bool = True
    hidden: int = 128
    layers: int = 7
    attention: bool = True

    def __post_init__(self):
        check_parameters(self.layers, self.hidden, "predictor")
        self.atom_types = tuple(int(z) for z in self.atom_types)
        if not self.mad > 0:
            raise EADError("predictor MAD must be positive")


PREDICTOR_RANGES = {"atom_types": (1, 118), "hidden": (1, 2**20), "layers": (1, 1000), "mad": (1e-300, None)}


def build_predictor(cfg: PredictorConfig) -> PropertyPredictor:
    return PropertyPredictor(len(cfg.atom_types) + int(cfg.include_charges), cfg.hidden, cfg.layers,
                             attention=cfg.attention)


class Predictor:
    """A trained property predictor: `predict(molecules)` in the property's units."""

    def __init__(self, config: PredictorConfig, network: PropertyPredictor | None = None, info: dict | None = None):
        self.config = config
        self.network = (network or build_predictor(config)).eval()
        self.encoder = FeatureEncoder(config.atom_types, config.include_charges)
        self.info = info or {}

    @classmethod
    def from_pretrained(cls, path) -> "Predictor":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        meta = read_json(path / CONFIG_NAME, "predictor config")
        if not isinstance(meta, dict) or meta.get("format") != "ead-predictor":
            raise EADError(f"{path} is not an EAD property predictor")
        config = PredictorConfig(**check_json(meta.get("predictor"), dataclass_schema(PredictorConfig),
                                              f"predictor config in {path}", PREDICTOR_RANGES))
        net = build_predictor(config)
        try:
            state = load_file(str(path / WEIGHTS_NAME))
            check_weights(state, str(path / WEIGHTS_NAME))
            net.load_state_dict(state)
        except FileNotFoundError:
            raise EADError(f"missing {WEIGHTS_NAME} in {path}") from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise EADError(f"weights in {path} do not fit its config: {str(e).splitlines()[0]}") from None
        return cls(config, net, meta.get("info"))

    def save_pretrained(self, path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        meta = {"format": "ead-predictor", "ead_version": __version__,
                "predictor": dataclasses.asdict(self.config), "info": self.info}
        write_atomic(path / WEIGHTS_NAME, lambda p: save_file(state, str(p)))
        write_atomic(path / CONFIG_NAME, lambda p: p.write_text(json.dumps(meta, indent=2)))
        return path

    @torch.no_grad()
    def predict(self, molecules, batch_size: int = 256) -> np.ndarray:
        """Property values [M] (raw units) of a MoleculeSet or (positions, atomic numbers) pairs."""
        mols = as_molecule_set(molecules)
        mols.validate(self.config.atom_types)
        out = []
        for start in range(0, len(mols), batch_size):
            b = collate(mols, np.arange(start, min(start + batch_size, len(mols))), self.encoder)
            out.append(self.network(b.x, b.h, b.mol, b.num_molecules, b.edge_index).double().numpy())
        pred = np.concatenate(out) if out else np.zeros(0)
        return pred * self.config.mad + self.config.mean
