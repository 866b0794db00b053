"""What the padded bfloat16 rows cost per network call (docs/reliability.md): one call of the shipped
model on 100 molecules drawn from p(M), bf16 autocast, no gradients, one thread, padding off and on
alternately; prints the best of `reps` calls of each.

    python benchmarks/pad_cost.py [reps]
"""
import sys
import time

import torch

from ead.data.batch import full_edges, molecule_index, remove_mean
from ead.model.egnn import SpeedOptions
from ead.pipeline import EAD

torch.set_num_threads(1)
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 12
m = EAD.from_pretrained("qm9", device="cpu")
net = m.denoiser
g = torch.Generator().manual_seed(0)
sizes = m.sample_sizes(100, g)
mol, e = molecule_index(sizes), full_edges(sizes)
x = remove_mean(torch.randn(len(mol), 3, generator=g), mol, len(sizes))
h = torch.randn(len(mol), net.num_features, generator=g)
t = torch.rand(len(mol), generator=g)
best = {False: float("inf"), True: float("inf")}
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    for _ in range(reps):
        for pad in (False, True):
            net.speed = SpeedOptions(pad_rows=pad)
            t0 = time.perf_counter()
            net(x, h, t, mol, len(sizes), e)
            best[pad] = min(best[pad], time.perf_counter() - t0)
print(f"atoms {len(mol)}, atom pairs {e.shape[1]}; best of {reps} s/call: "
      f"unpadded {best[False]:.4f}, padded {best[True]:.4f} ({best[True] / best[False] - 1:+.1%})")
