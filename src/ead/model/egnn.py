"""EDM's E(n)-equivariant denoiser (EGNN), on flat batches, with a time per atom (docs/method.md §5).

Shapes: N atoms in the batch, E directed edges (i, j) between distinct atoms of one molecule,
H hidden width, F node features. Edges are given as `edge_index = (row, col)`: messages flow
from j (col) into i (row) and are summed over j.

Speed: the first layer of each edge MLP acts on [h_i, h_j, e_ij]; it is split into per-node
projections (W_a·h, W_b·h, computed once for N nodes) gathered onto edges, instead of a matrix
product over E concatenated rows. Same weights, same result (up to float rounding), ~E/N fewer
FLOPs for that layer. `fused=False` computes the plain concatenation (for checks and benchmarks).

Further speed options live in `EGNN.speed` (a `SpeedOptions`; every trick can be turned off, and
each gives the same result up to float rounding — tests/test_bench.py checks it):
- `edge_chunk`: on CPU and without autograd (sampling), run the network on groups of whole
  molecules of about this many edges at a time. Molecules never exchange messages, so this is
  exact; it keeps the [E, H] edge tensors in cache instead of streaming ~30 passes of E×H floats
  through memory per layer (1.2–2× for the paper network on 100 QM9 molecules; docs/speed.md).
- `gather`: `index_select` (a plain row copy, ~3× faster on CPU) or `index` (advanced indexing).
- `inplace`: in-place activations when no gradient is recorded (fewer allocations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

RBF_CUTOFF = 10.0   # Å: the radial basis's last centre (QM9's largest atom pairs are ~10 Å apart)


@dataclass
class SpeedOptions:
    edge_chunk: int = 8192          # edges per group of molecules on CPU; 0 = one group (off)
    gather: str = "index_select"    # "index_select" | "index"
    inplace: bool = True            # in-place SiLU / adds under no_grad
    # CPU half-precision inference: pad the node and edge counts up to one of a few sizes (eight per
    # octave). oneDNN keeps state for every new matrix shape it multiplies in bfloat16, and every
    # sampling batch has new atom and edge counts, so without this a sample's memory grew with -n.
    pad_rows: bool = True

    def __post_init__(self):
        if self.gather not in ("index_select", "index"):
            raise ValueError(f"gather must be index_select or index, got {self.gather!r}")
        if self.edge_chunk < 0:
            raise ValueError("edge_chunk must be ≥ 0")


PLAIN = SpeedOptions(edge_chunk=0, gather="index", inplace=False, pad_rows=False)   # every trick off


def padded_size(rows: int) -> int:
    """The smallest of 64, 72, 80, …: a multiple of 1/8 of the power of two below it, ≥ rows
    (at most 1/8 more rows; about 8 sizes per doubling)."""
    if rows <= 64:
        return 64
    step = (1 << ((rows - 1).bit_length() - 1)) // 8
    return -(-rows // step) * step


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = values.new_zeros((num_segments,) + values.shape[1:])
    return out.index_add_(0, index, values)


def _gather(values: torch.Tensor, index: torch.Tensor, speed: SpeedOptions) -> torch.Tensor:
    return values.index_select(0, index) if speed.gather == "index_select" else values[index]


def _cpu_half_autocast() -> bool:
    half = (torch.bfloat16, torch.float16)
    try:
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in half
    except TypeError:   # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() in half


def _silu(x: torch.Tensor, speed: SpeedOptions) -> torch.Tensor:
    return F.silu(x, inplace=speed.inplace and not torch.is_grad_enabled())


class PairMLP(nn.Module):
    """Linear([h_i, h_j, e_ij]) → SiLU → Linear → SiLU, with the first layer computed per node."""

    def __init__(self, hidden: int, edge_features: int):
        super().__init__()
        self.hidden = hidden
        self.first = nn.Linear(2 * hidden + edge_features, hidden)
        self.second = nn.Linear(hidden, hidden)

    def forward(self, h, row, col, edge_attr, fused: bool = True, speed: SpeedOptions = PLAIN):
        if fused:
            H = self.hidden
            w = self.first.weight
            # the bias goes onto the N per-node rows rather than the E edge rows
            hi = F.linear(h, w[:, :H], self.first.bias)    # [N, H]
            hj = F.linear(h, w[:, H : 2 * H])              # [N, H]
            pre = _gather(hi, row, speed)
            if speed.inplace and not torch.is_grad_enabled():
                pre.add_(_gather(hj, col, speed))
                # + e_ij·W_e, no copy of pre (in-place ops skip autocast: cast as it would)
                m = pre.addmm_(edge_attr.to(pre.dtype), w[:, 2 * H :].t().to(pre.dtype))
            else:
                pre = pre + _gather(hj, col, speed)
                m = torch.addmm(pre, edge_attr, w[:, 2 * H :].t())
        else:
            m = self.first(torch.cat([h[row], h[col], edge_attr], dim=-1))
        return _silu(self.second(_silu(m, speed)), speed)     # [E, H]


def radial_basis(dist2: torch.Tensor, count: int, cutoff: float = RBF_CUTOFF) -> torch.Tensor:
    """[E, 1] squared distances → [E, count] Gaussians of the distance, centres evenly spaced on
    [0, cutoff] Å, each as wide as the spacing (a recipe option: EDM feeds the raw d² alone)."""
    centres = torch.linspace(0.0, cutoff, count, device=dist2.device, dtype=dist2.dtype)
    gamma = ((count - 1) / cutoff) ** 2
    return torch.exp(-gamma * (torch.sqrt(dist2 + 1e-8) - centres) ** 2)


class EquivariantBlock(nn.Module):
    """One EGNN block: an invariant message-passing layer (attention-gated, sum-aggregated,
    residual node MLP) followed by an equivariant coordinate update.

    Edge features: the current d², the input layer's d² (EDM), then `static_features` more computed
    once per call (radial bases, the self-conditioning estimate's d²), then, with `rbf` > 0, the
    radial basis of the current distance."""

    def __init__(self, hidden: int, coords_range: float, norm_constant: float = 1.0,
                 normalization_factor: float = 1.0, attention: bool = True, tanh: bool = True,
                 rbf: int = 0, static_features: int = 0):
        super().__init__()
        self.rbf = rbf
        edge_features = 2 + static_features + rbf
        self.edge_mlp = PairMLP(hidden, edge_features)
        self.attention = nn.Linear(hidden, 1) if attention else None
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.coord_mlp = PairMLP(hidden, edge_features)
        self.coord_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.coord_out.weight, gain=0.001)  # start near the identity map
        self.coords_range = coords_range
        self.norm_constant = norm_constant
        self.normalization_factor = normalization_factor
        self.tanh = tanh

    def forward(self, h, x, row, col, input_dist2, fused: bool = True, speed: SpeedOptions = PLAIN):
        """`input_dist2`: [E, 1 + static_features], the features computed once per call."""
        n = h.shape[0]
        diff = _gather(x, row, speed) - _gather(x, col, speed)           # [E, 3]
        dist2 = (diff * diff).sum(-1, keepdim=True)                       # [E, 1]
        unit = diff / (torch.sqrt(dist2 + 1e-8) + self.norm_constant)     # [E, 3]
        parts = [dist2, input_dist2] + ([radial_basis(dist2, self.rbf)] if self.rbf else [])
        edge_attr = torch.cat(parts, dim=-1)                              # [E, edge_features]

        m = self.edge_mlp(h, row, col, edge_attr, fused, speed)           # [E, H]
        if self.attention is not None:
            gate = torch.sigmoid(self.attention(m))
            m = m.mul_(gate) if speed.inplace and not torch.is_grad_enabled() else m * gate
        agg = segment_sum(m, row, n) / self.normalization_factor          # [N, H]
        h = h + self.node_mlp(torch.cat([h, agg], dim=-1))

        phi = self.coord_out(self.coord_mlp(h, row, col, edge_attr, fused, speed))  # [E, 1]
        if self.tanh:
            phi = torch.tanh(phi) * self.coords_range
        x = x + segment_sum(unit * phi, row, n) / self.normalization_factor
        return h, x


class EGNN(nn.Module):
    """Embedding → L equivariant blocks → output projection."""

    def __init__(self, in_features: int, hidden: int = 256, layers: int = 9, attention: bool = True,
                 tanh: bool = True, coords_range: float = 15.0, norm_constant: float = 1.0,
                 normalization_factor: float = 1.0, out_features: int | None = None, rbf: int = 0,
                 guide_positions: bool = False):
        super().__init__()
        self.rbf, self.guide_positions = rbf, guide_positions
        static = rbf + int(guide_positions)   # input-layer radial basis, the guide positions' d²
        self.embedding = nn.Linear(in_features, hidden)
        self.embedding_out = nn.Linear(hidden, out_features or in_features)
        # as EDM: the total coordinate range is shared out over the layers
        self.blocks = nn.ModuleList(
            EquivariantBlock(hidden, coords_range / layers, norm_constant, normalization_factor,
                             attention, tanh, rbf, static)
            for _ in range(layers)
        )
        self.speed = SpeedOptions()

    def forward(self, h, x, edge_index, fused: bool = True, guide_x: torch.Tensor | None = None):
        """`guide_x` ([N, 3], when built with guide_positions): a second set of positions whose
        pairwise d² enters every layer as an invariant edge feature (self-conditioning's estimate)."""
        speed = self.speed
        row, col = edge_index[0], edge_index[1]
        groups = None
        chunk = speed.edge_chunk
        if chunk and h.device.type == "cpu" and _cpu_half_autocast():
            chunk *= 2   # the chunk is sized in float32 rows: half precision fits twice as many
        # inference only: with autograd every chunk's activations are kept for the backward pass
        # anyway, and the measured training step got slower, not faster (docs/speed.md)
        if chunk and h.device.type == "cpu" and not torch.is_grad_enabled() and row.numel() > chunk:
            groups = edge_groups(edge_index, h.shape[0], chunk)
        if groups is None:
            return self._run(h, x, row, col, fused, speed, guide_x)
        hs, xs = [], []
        for a, b, s, e in groups:   # node range [a, b) holds exactly the edges [s, e)
            ho, xo = self._run(h[a:b], x[a:b], row[s:e] - a, col[s:e] - a, fused, speed,
                               None if guide_x is None else guide_x[a:b])
            hs.append(ho)
            xs.append(xo)
        return torch.cat(hs), torch.cat(xs)

    def _run(self, h, x, row, col, fused, speed, guide_x=None):
        n = h.shape[0]
        if not (speed.pad_rows and h.device.type == "cpu" and not torch.is_grad_enabled() and _cpu_half_autocast()):
            return self._layers(h, x, row, col, fused, speed, guide_x)
        # padding nodes (zeros) after the real ones, padding edges from the first padding node to
        # itself: no real node sends to or receives from them, and their values stay finite
        pad_n, pad_e = padded_size(n + 1) - n, padded_size(row.numel()) - row.numel()

        def grow(t, k, value=0):
            return torch.cat([t, t.new_full((k,) + t.shape[1:], value)])

        h, x = grow(h, pad_n), grow(x, pad_n)
        row, col = grow(row, pad_e, n), grow(col, pad_e, n)
        guide_x = None if guide_x is None else grow(guide_x, pad_n)
        h, x = self._layers(h, x, row, col, fused, speed, guide_x)
        return h[:n], x[:n]

    def _layers(self, h, x, row, col, fused, speed, guide_x=None):
        diff = _gather(x, row, speed) - _gather(x, col, speed)
        input_dist2 = (diff * diff).sum(-1, keepdim=True)
        static = [input_dist2]
        if self.rbf:
            static.append(radial_basis(input_dist2, self.rbf))
        if self.guide_positions:   # no estimate yet: its d² is 0
            if guide_x is None:
                static.append(torch.zeros_like(input_dist2))
            else:
                gd = _gather(guide_x, row, speed) - _gather(guide_x, col, speed)
                static.append((gd * gd).sum(-1, keepdim=True))
        if len(static) > 1:
            input_dist2 = torch.cat(static, dim=-1)
        h = self.embedding(h)
        for block in self.blocks:
            h, x = block(h, x, row, col, input_dist2, fused, speed)
        return self.embedding_out(h), x


def edge_groups(edge_index: torch.Tensor, num_nodes: int, chunk: int):
    """Split a graph into consecutive node ranges that no edge crosses, each holding about
    `chunk` edges: [(a, b, s, e)] with nodes a..b-1 and edges s..e-1. None if the edges are not
    sorted by row (then there is no such split to read off cheaply) or if there is a single group.

    A boundary before node r = row[p] (p the first edge of its row) is valid when every edge
    before p stays below r and every edge from p on stays at or above r; for flat batches these
    are exactly the molecule boundaries. One host sync per call (cheap next to a forward pass)."""
    row, col = edge_index[0], edge_index[1]
    E = row.numel()
    lo, hi = torch.minimum(row, col), torch.maximum(row, col)
    before = torch.cummax(hi, 0).values                                    # max over edges ≤ p
    after = torch.flip(torch.cummin(torch.flip(lo, (0,)), 0).values, (0,))  # min over edges ≥ p
    first = torch.ones(E, dtype=torch.bool, device=row.device)
    first[1:] = row[1:] != row[:-1]
    ok = first & (after >= row)
    ok[1:] &= before[:-1] < row[1:]
    ok[0] = False
    cand = torch.nonzero(ok).squeeze(-1)                                   # valid edge cut points
    sorted_rows = bool((row[1:] >= row[:-1]).all()) if E > 1 else True
    if not sorted_rows or cand.numel() == 0:
        return None
    targets = torch.arange(chunk, E, chunk, device=row.device)
    pick = torch.unique(cand[torch.searchsorted(cand, targets).clamp(max=cand.numel() - 1)])
    cuts = pick.tolist()
    nodes = row[pick].tolist()
    if not cuts:
        return None
    e_bounds = [0] + cuts + [E]
    n_bounds = [0] + nodes + [num_nodes]
    return [(n_bounds[k], n_bounds[k + 1], e_bounds[k], e_bounds[k + 1])
            for k in range(len(cuts) + 1)]


class Denoiser(nn.Module):
    """ε̂_θ(z, t): predicts the noise of every atom from the noised molecule and the atoms' times.

    Inputs per atom: z^x [N,3] (zero CoM per molecule), z^h [N,F], time t_i/T [N] and optional
    context [N,C]. Output: (ε̂^x [N,3] zero-CoM, ε̂^h [N,F]). The time is an invariant node
    feature *per atom* — EDM feeds one shared t/T; EAD's atoms each carry their own.

    The output is ε̂ for EDM's parameterisation; a model trained with another target (x̂0 or v̂,
    `diffusion/target.py` converts) returns that target in the same two slots, the coordinate slot
    as a zero-CoM displacement from z^x. With `self_condition`, the network also reads an earlier
    estimate of the clean molecule, `self_cond` = (x̂0^x [N,3], x̂0^h [N,F]) or None (zeros):
    its features as node inputs and its pairwise d² as an edge feature, both invariant.
    """

    def __init__(self, num_features: int, context_features: int = 0, hidden: int = 256,
                 layers: int = 9, self_condition: bool = False, **egnn_options):
        super().__init__()
        self.num_features = num_features
        self.context_features = context_features
        self.self_condition = self_condition
        extra = num_features if self_condition else 0
        self.egnn = EGNN(num_features + 1 + context_features + extra, hidden, layers,
                         guide_positions=self_condition, **egnn_options)

    @property
    def speed(self) -> SpeedOptions:
        return self.egnn.speed

    @speed.setter
    def speed(self, options: SpeedOptions) -> None:
        self.egnn.speed = options

    def forward(self, z_x, z_h, time, mol, num_molecules: int, edge_index, context=None,
                fused: bool = True, self_cond=None):
        from ..data.batch import center   # remove_mean without a host sync (same values)

        feats = [z_h, time.to(z_h.dtype).unsqueeze(-1)]
        if self.context_features:
            assert context is not None and context.shape[-1] == self.context_features
            feats.append(context.to(z_h.dtype))
        guide_x = None
        if self.self_condition:
            if self_cond is None:
                feats.append(torch.zeros_like(z_h))
            else:
                guide_x = self_cond[0].to(z_x.dtype)
                feats.append(self_cond[1].to(z_h.dtype))
        h_out, x_out = self.egnn(torch.cat(feats, -1), z_x, edge_index, fused, guide_x)
        eps_x = center(x_out - z_x, mol, num_molecules)
        return eps_x, h_out[:, : self.num_features]
