"""Writing files so that a reader never sees a half-written one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, write) -> None:
    """Write through `write(tmp_path)` into a temp file beside `path`, then rename into place,
    with the mode a plain open() gives (0666 less the umask: 0644 usually), whatever mode the
    writer created the temp file with (safetensors' is 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    """The process's umask (portably read only by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
