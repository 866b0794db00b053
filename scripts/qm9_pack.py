"""Pack the QM9 cache (≈ 36 MB npz) small enough to travel to a lent GPU machine with the working
tree (64 MiB in all), and unpack it there, bit for bit.

    python scripts/qm9_pack.py pack   ~/.cache/ead/qm9_v1.npz .devcache/qm9_v1.pack
    python scripts/qm9_pack.py unpack .devcache/qm9_v1.pack  $EAD_CACHE/qm9_v1.npz

Coordinates are float32 with ten-decimal sources, so their low bytes are close to random; storing
each of the four bytes of every float as its own plane before LZMA lets the compressor find the
redundancy of the sign/exponent bytes (24.7 MB in all, against 29.6 MB for gzip of the npz). The pack is
an npz of uint8 arrays plus a JSON header: no pickles.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from sample_grid import savez  # noqa: E402

from ead.io import write_atomic  # noqa: E402


def pack(src: Path, dst: Path) -> int:
    d = np.load(src, allow_pickle=False)
    header, blobs = {}, {}
    for k in d.files:
        a = np.asarray(d[k])   # (np.ascontiguousarray would make a 0-d array 1-d)
        options = {False: lzma.compress(a.tobytes(), preset=9)}
        if a.size and a.dtype.kind == "f":   # byte planes: smaller for coordinates, not for all
            options[True] = lzma.compress(a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes(), preset=9)
        planes = min(options, key=lambda v: len(options[v]))
        header[k] = {"dtype": a.dtype.str, "shape": list(a.shape), "planes": planes}
        blobs[k] = np.frombuffer(options[planes], dtype=np.uint8)
    write_atomic(dst, lambda p: savez(p, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                                       **blobs))
    return dst.stat().st_size


def unpack(src: Path, dst: Path) -> None:
    d = np.load(src, allow_pickle=False)
    header = json.loads(d["__header__"].tobytes())
    out = {}
    for k, h in header.items():
        raw = lzma.decompress(d[k].tobytes())
        dtype = np.dtype(h["dtype"])
        if h["planes"]:
            raw = np.frombuffer(raw, dtype=np.uint8).reshape(dtype.itemsize, -1).T.tobytes()
        out[k] = np.frombuffer(raw, dtype=dtype).reshape(tuple(h["shape"]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dst, lambda p: savez(p, **out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("verb", choices=["pack", "unpack"])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    a = p.parse_args(argv)
    if a.verb == "pack":
        print(f"{a.dst}: {pack(a.src, a.dst) / 1e6:.1f} MB")
    else:
        unpack(a.src, a.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
