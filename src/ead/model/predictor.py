"""The property predictor that scores conditional generation (method.md §9, as EDM's "property
classifier"): an EGNN over the molecule's atoms (element features, fully connected graph), a
node MLP, a sum over the atoms and a graph MLP to one number — the property normalised as
(value − mean) / MAD. Invariant to rotations, translations and atom order by construction."""

from __future__ import annotations

import torch
from torch import nn

from .egnn import EGNN, segment_sum


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
