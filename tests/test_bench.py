"""Speed work: every trick gives the plain model's ε̂; the dense EDM-layout baseline
(benchmarks/edm_baseline.py) computes the same function; `ead bench --quick` runs."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from edm_baseline import DenseDenoiser, DenseSamplingDenoiser, dense_mask, from_dense, to_dense  # noqa: E402

from ead.speed import PeakMemory  # noqa: E402
from ead.data.batch import full_edges, molecule_index, remove_mean
from ead.diffusion import noise as noise_mod
from ead.diffusion.sampler import CudaGraphDenoiser, accelerate
from ead.model.egnn import PLAIN, Denoiser, SpeedOptions, edge_groups, padded_size

TOL64 = 1e-10   # float64: the layouts differ only in summation order
SIZES = (5, 9, 3, 1, 12, 7)


def _inputs(sizes=SIZES, features=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(sizes)
    mol = molecule_index(n)
    x = remove_mean(torch.randn(len(mol), 3, generator=g, dtype=dtype) * 1.5, mol, len(n))
    h = torch.randn(len(mol), features, generator=g, dtype=dtype)
    t = torch.rand(len(mol), generator=g, dtype=dtype)
    return x, h, t, mol, n, full_edges(n)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = Denoiser(6, 0, hidden=32, layers=3).double().eval()
    for blk in m.egnn.blocks:   # a coordinate head with real weight: the x path matters
        torch.nn.init.normal_(blk.coord_out.weight, std=0.3)
    return m


def _run(net, speed, fused=True, **kw):
    old = net.speed
    net.speed = speed
    try:
        x, h, t, mol, n, e = _inputs(**kw)
        with torch.no_grad():
            return net(x, h, t, mol, len(n), e, fused=fused)
    finally:
        net.speed = old


@pytest.mark.parametrize("speed", [SpeedOptions(), SpeedOptions(edge_chunk=40),
                                   SpeedOptions(edge_chunk=1, gather="index", inplace=False),
                                   SpeedOptions(edge_chunk=0)])
def test_every_speed_option_gives_the_plain_result(net, speed):
    ref = _run(net, PLAIN, fused=False)
    out = _run(net, speed)
    assert torch.allclose(out[0], ref[0], atol=TOL64) and torch.allclose(out[1], ref[1], atol=TOL64)


def test_edge_chunks_only_without_gradients(net):
    """Chunking is for inference; with autograd the network runs as one group."""
    import ead.model.egnn as egnn

    x, h, t, mol, n, e = _inputs()
    calls = []
    orig = egnn.edge_groups
    egnn.edge_groups = lambda *a: calls.append(1) or orig(*a)
    try:
        net.speed = SpeedOptions(edge_chunk=30)
        net(x, h, t, mol, len(n), e)
        assert not calls
        with torch.no_grad():
            net(x, h, t, mol, len(n), e)
        assert calls
    finally:
        egnn.edge_groups = orig
        net.speed = SpeedOptions()


def test_edge_chunks_with_gradients(net):
    """Chunked runs with autograd (if forced) give the same gradient as one group."""
    import ead.model.egnn as egnn
    x, h, t, mol, n, e = _inputs()
    grads = []
    for speed in (PLAIN, SpeedOptions(edge_chunk=30)):
        net.speed = speed
        net.zero_grad()
        groups = egnn.edge_groups(e, int(n.sum()), speed.edge_chunk) if speed.edge_chunk else None
        if groups is None:
            ex, eh = net(x, h, t, mol, len(n), e)
        else:   # the grouped path, driven by hand (forward() only takes it without autograd)
            feats = torch.cat([h, t.unsqueeze(-1)], -1)
            outs = [net.egnn._run(feats[a:b], x[a:b], e[0, s:u] - a, e[1, s:u] - a, True, speed)
                    for a, b, s, u in groups]
            ho, xo = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            ex, eh = noise_mod.center(xo - x, mol, len(n)), ho[:, :6]
        (ex.pow(2).sum() + eh.pow(2).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    net.speed = SpeedOptions()
    net.zero_grad()
    assert torch.allclose(grads[0], grads[1], atol=1e-9)


def test_edge_groups_are_molecule_boundaries():
    n = torch.tensor(SIZES)
    e = full_edges(n)
    groups = edge_groups(e, int(n.sum()), chunk=50)
    starts = set((torch.cumsum(n, 0) - n).tolist())
    assert groups[0][0] == 0 and groups[-1][1] == int(n.sum()) and groups[-1][3] == e.shape[1]
    for (a, b, s, t), nxt in zip(groups, groups[1:] + [None]):
        assert a in starts
        assert ((e[:, s:t] >= a) & (e[:, s:t] < b)).all()        # no edge leaves its group
        if nxt is not None:
            assert nxt[0] == b and nxt[2] == t                    # contiguous, complete
    # edges not sorted by row: no split (the network then runs as one group)
    assert edge_groups(e[:, torch.randperm(e.shape[1])], int(n.sum()), 50) is None


def test_dense_edm_layout_equals_flat(net):
    """The benchmark's baseline computes the same ε̂ as the flat model (same weights), float64."""
    x, h, t, mol, n, e = _inputs()
    with torch.no_grad():
        fx, fh = net(x, h, t, mol, len(n), e)
        M = 29
        mask = dense_mask(n, M)
        dx, dh = DenseDenoiser(net)(to_dense(x, n, M), to_dense(h, n, M), to_dense(t, n, M), mask)
        assert torch.allclose(from_dense(dx, n), fx, atol=TOL64)
        assert torch.allclose(from_dense(dh, n), fh, atol=TOL64)
        assert dx[~mask].abs().max() == 0 and dh[~mask].abs().max() == 0   # padding stays zero
        # the adapter used by the sampling benchmark
        ax, ah = DenseSamplingDenoiser(DenseDenoiser(net))(x, h, t, mol, len(n), e)
        assert torch.allclose(ax, fx, atol=TOL64) and torch.allclose(ah, fh, atol=TOL64)


def test_dense_baseline_in_float32_within_stated_tolerance(net):
    net32 = Denoiser(6, 0, hidden=32, layers=3).eval()
    net32.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    x, h, t, mol, n, e = _inputs(dtype=torch.float32)
    with torch.no_grad():
        fx, fh = net32(x, h, t, mol, len(n), e)
        dx, dh = DenseSamplingDenoiser(DenseDenoiser(net32))(x, h, t, mol, len(n), e)
    assert torch.allclose(dx, fx, atol=1e-4) and torch.allclose(dh, fh, atol=1e-4)


def test_accelerate_wrappers(net):
    x, h, t, mol, n, e = _inputs()
    with torch.no_grad():
        ref = net(x, h, t, mol, len(n), e)
        plain = accelerate(net)(x, h, t, mol, len(n), e)
        assert torch.equal(plain[0], ref[0]) and torch.equal(plain[1], ref[1])
        # CUDA graphs: on a CPU tensor the wrapper is a pass-through
        g = CudaGraphDenoiser(accelerate(net))(x, h, t, mol, len(n), e)
        assert torch.equal(g[0], ref[0])
        # bf16 autocast: low-precision matrix products; outputs come back in the input dtype
        net32 = Denoiser(6, 0, hidden=32, layers=3).eval()
        net32.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
        bx, bh = accelerate(net32, autocast="bf16")(x.float(), h.float(), t.float(), mol, len(n), e)
        assert bx.dtype == torch.float32
        scale = max(ref[0].abs().max(), ref[1].abs().max())
        err = max((bx.double() - ref[0]).abs().max(), (bh.double() - ref[1]).abs().max()) / scale
        assert err < 5e-2   # stated bf16 tolerance (8-bit mantissa through 3 layers)
    with pytest.raises(ValueError):
        accelerate(net, autocast="int8")


def test_padded_sizes_are_few_and_close_above():
    sizes = {padded_size(r) for r in range(1, 2**14 + 1)}
    assert len(sizes) <= 8 * 8 + 1   # 64, then eight per doubling up to 2^14
    for r in range(1, 2**14 + 1):
        p = padded_size(r)
        assert r <= p <= max(64, r * 9 / 8)


@pytest.mark.parametrize("chunk", [0, 40])
def test_padded_rows_in_cpu_bf16_inference_leave_the_real_atoms_outputs(net, chunk):
    """Padding nodes and edges (bf16 on the CPU, no gradients) changes no real atom's output
    beyond bf16 rounding, with and without edge groups; in float32 nothing is padded."""
    net32 = Denoiser(6, 0, hidden=32, layers=3).eval()
    net32.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    x, h, t, mol, n, e = _inputs(dtype=torch.float32)
    out, fp32 = {}, {}
    for pad in (False, True):
        net32.speed = SpeedOptions(edge_chunk=chunk, pad_rows=pad)
        with torch.no_grad():
            out[pad] = accelerate(net32, autocast="bf16")(x, h, t, mol, len(n), e)
            fp32[pad] = net32(x, h, t, mol, len(n), e)
    assert all(torch.equal(a, b) for a, b in zip(fp32[False], fp32[True]))
    scale = max(out[False][0].abs().max(), out[False][1].abs().max())
    for a, b in zip(out[False], out[True]):
        assert a.shape == b.shape and (a - b).abs().max() / scale < 2e-2


def test_sync_free_centering_is_bit_identical():
    n = torch.tensor(SIZES)
    mol = molecule_index(n)
    x = torch.randn(len(mol), 3)
    assert torch.equal(noise_mod.center(x, mol, len(n)), remove_mean(x, mol, len(n)))


def test_peak_memory_sees_an_allocation():
    import mmap
    import time

    with PeakMemory("cpu", interval=0.001) as mem:
        buf = mmap.mmap(-1, 64 * 2**20)    # fresh pages (a tensor could reuse freed heap)
        for i in range(0, len(buf), 4096):
            buf[i] = 1                       # touch every page: now resident
        time.sleep(0.02)
        buf.close()
    assert mem.delta_mb > 30


def test_bench_quick_runs(capsys):
    from ead.cli import main

    assert main(["bench", "--quick", "--threads", "1", "--update", "sde-dpm2m", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "training step" in out and "EXTRAPOLATED" in out and "flat/dense" in out
    assert "micro    dense" in out and "GFLOP" in out
    assert "update rule sde-dpm2m" in out and "flat sampling float32 (--precision fp32" in out
    # the bf16-mixed training step is timed (against the bf16 peak) where the CPU has bf16 units
    import torch

    from ead.device import has_bf16_units

    assert ("micro    flat-bf16" in out) == has_bf16_units(torch.device("cpu"))


def test_bench_rejects_unknown_preset(capsys):
    from ead.cli import main

    assert main(["bench", "--quick", "--presets", "huge"]) == 2
    assert "unknown preset" in capsys.readouterr().err
