"""A dense implementation of EAD's denoiser in EDM's layout, the baseline `ead bench` compares the
flat layout with (docs/speed.md): molecules padded to [B, M, ·], all B·M·M pairs as edges, masks.
It lives beside the benchmarks, not in the library: only the benchmark uses it. `ead bench` loads
it from this file when run from a checkout (speed.py's BenchConfig.baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ead.data.batch import molecule_index
from ead.diffusion.loss import TrainingWindow
from ead.diffusion.noise import NoiseSchedule
from ead.model.egnn import Denoiser

QM9_MAX_ATOMS = 29   # EDM samples QM9 molecules padded to this many atoms


class DenseDenoiser(nn.Module):
    """The same network as a flat `Denoiser`, computed the way EDM's code does it: molecules padded
    to [B, M, ·], an edge for every one of the B·M·M ordered pairs (self-pairs and padding
    included), the edge MLPs on concatenated [h_i, h_j, e_ij] rows, messages and coordinate updates
    multiplied by an edge mask, scatter-add aggregation, node features multiplied by a node mask
    after every layer. It borrows the flat model's modules, so the weights are the same ones.

    forward(x [B,M,3], h [B,M,F], t [B,M], node_mask [B,M]) → (ε̂^x [B,M,3], ε̂^h [B,M,F]); padded
    rows of the outputs are zero. Real atoms get the flat model's values up to float rounding."""

    def __init__(self, flat: Denoiser):
        super().__init__()
        self.flat = flat
        self._edges: dict = {}

    def all_pairs(self, B: int, M: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's `get_adj_matrix`: rows/cols of all M·M pairs in each of the B blocks (cached)."""
        key = (B, M, str(device))
        if key not in self._edges:
            i = torch.arange(M, device=device)
            base = (torch.arange(B, device=device) * M).view(B, 1, 1)
            rows = (base + i.view(1, M, 1)).expand(B, M, M).reshape(-1)
            cols = (base + i.view(1, 1, M)).expand(B, M, M).reshape(-1)
            self._edges = {key: (rows, cols)}
        return self._edges[key]

    def forward(self, x, h, t, node_mask, context=None):
        B, M, _ = x.shape
        egnn = self.flat.egnn
        rows, cols = self.all_pairs(B, M, x.device)
        nm = node_mask.reshape(B * M, 1).to(x.dtype)
        em = (nm[rows] * nm[cols]) * (rows != cols).unsqueeze(-1).to(x.dtype)   # [B·M·M, 1]
        xf = x.reshape(B * M, 3) * nm
        feats = [h.reshape(B * M, -1), t.reshape(B * M, 1).to(x.dtype)]
        if self.flat.context_features:
            feats.append(context.reshape(B * M, -1).to(x.dtype))
        hf = torch.cat(feats, -1) * nm
        x0 = xf
        radial0, _ = _coord2diff(xf, rows, cols, 1.0)
        hh = egnn.embedding(hf)
        for blk in egnn.blocks:
            radial, unit = _coord2diff(xf, rows, cols, blk.norm_constant)
            e_attr = torch.cat([radial, radial0], 1)
            m = _mlp2(blk.edge_mlp, torch.cat([hh[rows], hh[cols], e_attr], 1))
            if blk.attention is not None:
                m = m * torch.sigmoid(blk.attention(m))
            m = m * em
            agg = _scatter_sum(m, rows, B * M) / blk.normalization_factor
            hh = (hh + blk.node_mlp(torch.cat([hh, agg], 1))) * nm
            phi = blk.coord_out(_mlp2(blk.coord_mlp, torch.cat([hh[rows], hh[cols], e_attr], 1)))
            if blk.tanh:
                phi = torch.tanh(phi) * blk.coords_range
            xf = (xf + _scatter_sum(unit * phi * em, rows, B * M) / blk.normalization_factor) * nm
            hh = hh * nm
        h_out = egnn.embedding_out(hh) * nm
        vel = ((xf - x0) * nm).reshape(B, M, 3)
        # EDM's remove_mean_with_mask
        n = node_mask.sum(1, keepdim=True).to(x.dtype).clamp_min(1).unsqueeze(-1)
        vel = vel - vel.sum(1, keepdim=True) / n * node_mask.unsqueeze(-1).to(x.dtype)
        return vel, h_out.reshape(B, M, -1)[..., : self.flat.num_features]


def _coord2diff(x, rows, cols, norm_constant):
    diff = x[rows] - x[cols]
    radial = (diff**2).sum(1, keepdim=True)
    return radial, diff / (torch.sqrt(radial + 1e-8) + norm_constant)


def _mlp2(pair_mlp, inp):
    """EDM's edge/coordinate MLP: Linear(cat) → SiLU → Linear → SiLU, from a PairMLP's weights."""
    return F.silu(pair_mlp.second(F.silu(pair_mlp.first(inp))))


def _scatter_sum(values, index, n):   # EDM's unsorted_segment_sum
    out = values.new_zeros((n, values.shape[1]))
    return out.scatter_add_(0, index.unsqueeze(-1).expand(-1, values.shape[1]), values)


def to_dense(values: torch.Tensor, num_atoms: torch.Tensor, max_atoms: int) -> torch.Tensor:
    """Flat [N, ·] → padded [B, max_atoms, ·] (zeros in the padding)."""
    B = len(num_atoms)
    slot = _dense_slots(num_atoms, max_atoms)
    out = values.new_zeros((B * max_atoms,) + values.shape[1:])
    out[slot] = values
    return out.view((B, max_atoms) + values.shape[1:])


def from_dense(values: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    B, M = values.shape[:2]
    return values.reshape((B * M,) + values.shape[2:])[_dense_slots(num_atoms, M)]


def _dense_slots(num_atoms, max_atoms):
    mol = molecule_index(num_atoms)
    start = torch.cumsum(num_atoms, 0) - num_atoms
    return mol * max_atoms + torch.arange(len(mol), device=mol.device) - start[mol]


def dense_mask(num_atoms: torch.Tensor, max_atoms: int) -> torch.Tensor:
    return torch.arange(max_atoms, device=num_atoms.device).unsqueeze(0) < num_atoms.unsqueeze(1)


class DenseSamplingDenoiser:
    """The dense network behind the flat sampling loop's calling convention: pads the batch to
    `max_atoms` (29 for QM9, as EDM samples), runs `DenseDenoiser`, un-pads. The padding and
    un-padding cost is counted against the dense side (EDM keeps everything padded, so this is
    slightly unfavourable to it; it is small next to the network)."""

    def __init__(self, dense: DenseDenoiser, max_atoms: int = QM9_MAX_ATOMS):
        self.dense, self.max_atoms = dense, max_atoms

    def __call__(self, z_x, z_h, time, mol, num_molecules, edges, context=None):
        num_atoms = torch.bincount(mol, minlength=num_molecules)
        M = max(self.max_atoms, int(num_atoms.max()))
        d = lambda v: to_dense(v, num_atoms, M)  # noqa: E731
        ex, eh = self.dense(d(z_x), d(z_h), d(time), dense_mask(num_atoms, M),
                            None if context is None else d(context))
        return from_dense(ex, num_atoms), from_dense(eh, num_atoms)


def dense_diffusion_loss(dense: DenseDenoiser, noise: NoiseSchedule, window: TrainingWindow,
                         batch, gen, max_atoms: int | None = None) -> torch.Tensor:
    """Algorithm 1's loss computed in the padded layout (EDM's training step): per-atom times,
    noise and loss all on [B, M, ·] with masks; M = the batch's largest molecule unless given (EDM's
    collate trims the padding to the batch's largest molecule)."""
    num_atoms = batch.num_atoms
    M = max_atoms or int(num_atoms.max())
    mask = dense_mask(num_atoms, M)
    mf = mask.unsqueeze(-1).to(batch.x.dtype)
    B = len(num_atoms)
    t = window.sample(batch.mol, B, gen)            # per-atom times (drawn flat, then padded)
    td = to_dense(t, num_atoms, M)
    x, h = to_dense(batch.x, num_atoms, M), to_dense(batch.h, num_atoms, M)
    n = mf.sum(1, keepdim=True).clamp_min(1)
    eps_x = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * mf
    eps_x = (eps_x - eps_x.sum(1, keepdim=True) / n) * mf
    eps_h = torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype) * mf
    alpha = noise.alpha(td).to(x.dtype).unsqueeze(-1)
    sigma = noise.sigma(td).to(x.dtype).unsqueeze(-1)
    z_x = (alpha * x + sigma * eps_x) * mf
    z_x = (z_x - z_x.sum(1, keepdim=True) / n) * mf
    z_h = (alpha * h + sigma * eps_h) * mf
    px, ph = dense(z_x, z_h, td.to(x.dtype) / noise.timesteps, mask)
    sq = ((px - eps_x) ** 2 * mf).sum() + ((ph - eps_h) ** 2 * mf).sum()
    return sq / (batch.x.shape[0] * (3 + batch.h.shape[1]))
