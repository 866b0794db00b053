"""Peak memory of sampling against the number of molecules, per precision (docs/reliability.md).

Samples `n` molecules in batches of 128 with a random-weight tiny model (10 synchronous steps, one
thread) and prints the process's peak RSS after each batch: flat means memory does not grow with n.

    python benchmarks/sample_memory.py 3000 fp32
    python benchmarks/sample_memory.py 3000 bf16
"""
import sys, resource, torch
torch.set_num_threads(1)
from ead.pipeline import EAD
from ead.model.config import ModelConfig
n = int(sys.argv[1]); prec = sys.argv[2]
hist = {k: 1 for k in range(10, 26)}
torch.manual_seed(0)
m = EAD(ModelConfig.from_preset("tiny", size_histogram=hist), device="cpu")
m.autocast = None if prec == "fp32" else "bf16"
import gc
rss = []
for res, _ in m.sample_batches(n, sampler="synchronous", steps=10, seed=0, batch_size=128):
    gc.collect()
    rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
print(prec, n, "maxrss MB per batch:", rss[:3], "...", rss[-3:])
