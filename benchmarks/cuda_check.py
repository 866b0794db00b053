"""Checks of the CUDA path (issue 4), run on a lent GPU: prints one JSON line per check.

    python benchmarks/cuda_check.py [--model qm9]

1. the denoiser on CUDA (float32, TF32 off) agrees with the CPU in float64;
2. bf16 autocast on CUDA: relative error of ε̂;
3. E(3) equivariance on CUDA (rotation + translation of the input);
4. each sampler runs on CUDA, every atom reaches t = 0, and the host syncs per step of the loop
   are counted (torch.cuda.set_sync_debug_mode, 100 steps minus 50 steps);
5. a training step of the small preset at batch 256: host syncs per step (30 steps minus 10);
6. the CUDA-graph denoiser equals the eager one, and how much faster a call is.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch


def emit(name: str, **values) -> None:
    print(json.dumps({"check": name, **values}), flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def main(argv=None) -> int:
    from ead.data.batch import full_edges, molecule_index, remove_mean
    from ead.diffusion.sampler import accelerate
    from ead.pipeline import EAD

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="qm9")
    p.add_argument("--molecules", type=int, default=100)
    p.add_argument("--device", default="cuda", help="cpu: a dry run of the script's own logic")
    p.add_argument("--train-molecules", type=int, default=4096,
                   help="QM9 molecules for the training-step check (0: skip it)")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        emit("cuda", ok=False, reason="no CUDA device")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    if cuda:
        emit("cuda", ok=True, device=torch.cuda.get_device_name(), torch=torch.__version__,
             cuda=torch.version.cuda)

    cpu_model = EAD.from_pretrained(a.model, device="cpu")
    gpu_model = EAD.from_pretrained(a.model, device=a.device)
    gen = torch.Generator().manual_seed(0)
    sizes = cpu_model.sample_sizes(a.molecules, gen)
    B, nf = len(sizes), cpu_model.config.num_features
    mol = molecule_index(sizes)
    edges = full_edges(sizes)
    z_x = remove_mean(torch.randn(len(mol), 3, generator=gen), mol, B)
    z_h = torch.randn(len(mol), nf, generator=gen)
    t = torch.randint(0, 1001, (len(mol),), generator=gen).float() / 1000
    inputs = (z_x, z_h, t, mol, B, edges, None)
    on_gpu = tuple(v.to(dev) if torch.is_tensor(v) else v for v in inputs)

    # 1. CUDA float32 vs CPU float64
    ref = [o.double() for o in cpu_model.denoiser.double()(*(v.double() if torch.is_tensor(v) and v.is_floating_point() else v for v in inputs))]
    cpu_model.denoiser.float()
    with torch.no_grad():
        out = gpu_model.denoiser(*on_gpu)
    emit("fp32_cuda_vs_fp64_cpu", rel_x=rel(out[0].cpu(), ref[0]), rel_h=rel(out[1].cpu(), ref[1]),
         ok=max(rel(out[0].cpu(), ref[0]), rel(out[1].cpu(), ref[1])) < 1e-4)

    # 2. bf16 autocast
    with torch.no_grad():
        bf = accelerate(gpu_model.denoiser, autocast="bf16")(*on_gpu)
    emit("bf16_autocast_cuda", rel_x=rel(bf[0].cpu(), ref[0]), rel_h=rel(bf[1].cpu(), ref[1]),
         ok=max(rel(bf[0].cpu(), ref[0]), rel(bf[1].cpu(), ref[1])) < 5e-2)

    # 3. equivariance on CUDA
    R = random_rotation(gen).float().to(dev)
    shift = torch.randn(1, 3, generator=gen).to(dev)
    with torch.no_grad():
        rot = gpu_model.denoiser(on_gpu[0] @ R.T + shift, *on_gpu[1:])
    err = rel(rot[0], out[0] @ R.T)
    emit("equivariance_cuda", rel_x=err, rel_h=rel(rot[1], out[1]), ok=err < 1e-4)

    # 4. samplers on CUDA: finish, and host syncs per step inside the loop — counted at 50 and at
    #    100 steps, so that the per-batch set-up (sizes, edges, the final decode) cancels out
    def sync():
        if cuda:
            torch.cuda.synchronize()

    def counted(fn):
        """(result, host syncs reported by torch.cuda.set_sync_debug_mode, seconds)"""
        sync()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                t0 = time.time()
                out = fn()
                sync()
                seconds = time.time() - t0
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        return out, sum("synchroniz" in str(w.message) for w in caught), seconds

    for sampler in ("synchronous", "manual", "adaptive"):
        runs = {}
        for steps in (50, 100):
            runs[steps] = counted(lambda: next(gpu_model.sample_batches(
                a.molecules, sampler=sampler, steps=steps, seed=0, batch_size=a.molecules))[0])
        res, syncs, seconds = runs[100]
        extra_calls = res.network_calls - runs[50][0].network_calls
        finite = bool(torch.isfinite(res.positions).all())
        emit(f"sampler_{sampler}", steps=100, network_calls=res.network_calls, seconds=round(seconds, 3),
             host_syncs=syncs, host_syncs_at_50_steps=runs[50][1],
             syncs_per_step=round((syncs - runs[50][1]) / max(1, extra_calls), 3), finite=finite, ok=finite)

    # 5. training on CUDA: host syncs per step (a 30-step run minus a 10-step one) and s/step
    if a.train_molecules:
        import tempfile

        from ead.train import TrainConfig, train

        def run(steps, root):
            cfg = TrainConfig(run_dir=str(Path(root) / f"r{steps}"), data="qm9", preset="small",
                              limit_molecules=a.train_molecules, batch_size=256, max_steps=steps,
                              val_every=0, log_every=10**6, ckpt_every=10**6, quiet=True,
                              accelerator="cuda" if cuda else "cpu", threads=2)
            return train(cfg)

        with tempfile.TemporaryDirectory() as root:
            counts = {steps: counted(lambda: run(steps, root)) for steps in (10, 30)}
        per_step = (counts[30][1] - counts[10][1]) / 20
        # (no step time here: the first run pays CUDA's start-up; a run's log.csv has s_per_step)
        emit("train_step", preset="small", batch=256, syncs_per_step=per_step, ok=per_step == 0)

    if not cuda:
        return 0
    # 6. CUDA graph vs eager
    graph = accelerate(gpu_model.denoiser, cuda_graph=True)
    eager = accelerate(gpu_model.denoiser)
    with torch.no_grad():
        g1 = graph(*on_gpu)
        e1 = eager(*on_gpu)
        timings = {}
        for name, fn in (("eager", eager), ("cuda_graph", graph)):
            for _ in range(3):
                fn(*on_gpu)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(50):
                fn(*on_gpu)
            torch.cuda.synchronize()
            timings[name] = (time.perf_counter() - t0) / 50
    emit("cuda_graph", rel_x=rel(g1[0], e1[0]), rel_h=rel(g1[1], e1[1]), eager_ms=1e3 * timings["eager"],
         graph_ms=1e3 * timings["cuda_graph"], speedup=timings["eager"] / timings["cuda_graph"],
         ok=max(rel(g1[0], e1[0]), rel(g1[1], e1[1])) < 1e-5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
