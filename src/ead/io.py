"""Files in and out: a writer that a reader never sees half-written, a bounded JSON reader, and
the cleanup of temporary files that a killed process left behind."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import EADError

# Every JSON the package reads (model, predictor and checkpoint configs) is small: a size cap and
# a nesting cap refuse a hostile one before the parser recurses into it (docs/reliability.md).
MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def tmp_name(path: Path, tag: str = "") -> Path:
    """The hidden temporary name beside `path` for this process: `.NAME.tmpPID` (+ tag)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{tag}")


def write_atomic(path: Path, write) -> None:
    """Write through `write(tmp_path)` into a temp file beside `path`, then rename into place,
    with the mode a plain open() gives (0666 less the umask: 0644 usually), whatever mode the
    writer created the temp file with (safetensors' is 0600)."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except Exception as e:   # a full disk, in os or in safetensors' writer: one line, path as it was
        if not isinstance(e, OSError) and type(e).__name__ != "SafetensorError":
            raise
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise EADError(f"cannot write {path}: {reason}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    """The process's umask (portably read only by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_TMP_PID = re.compile(r"^\..+\.tmp(\d+)$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the `.NAME.tmpPID` files and folders in `folder` whose process is gone (a run killed
    with SIGKILL, or a full disk): what `write_atomic` and the checkpointer leave when they cannot
    clean up themselves. Another live process's temporaries are left alone."""
    import shutil

    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_PID.match(p.name)
        if not m or process_alive(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` is running (this process counts as not: its own leftovers are stale)."""
    if pid == os.getpid():
        return False   # ours from an earlier attempt in this process: nobody is writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path, what: str):
    """The JSON value in `path`, refused with an EADError (naming `what`) when it is missing,
    not a regular file, larger than MAX_JSON_BYTES, nested deeper than MAX_JSON_DEPTH or not JSON.
    Non-finite numbers (NaN, Infinity) are refused too: no config field may hold one."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EADError(f"missing {what} {path}") from None
    except OSError as e:
        raise EADError(f"cannot read {what} {path}: {e.strerror or e}") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise EADError(f"{what} {path} is not a regular file")
    if st.st_size > MAX_JSON_BYTES:
        raise EADError(f"{what} {path} is {st.st_size:,} bytes; a config is at most {MAX_JSON_BYTES:,}")
    try:
        text = path.read_bytes()[: MAX_JSON_BYTES + 1].decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EADError(f"corrupt {what} {path}: {e}") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise EADError(f"corrupt {what} {path}: nested {depth} deep (at most {MAX_JSON_DEPTH})")

    def constant(name):
        raise ValueError(f"{name} is not a number a config may hold")

    try:
        return json.loads(text, parse_constant=constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise EADError(f"corrupt {what} {path}: {e}") from None


def json_depth(text: str) -> int:
    """How deep the brackets of a JSON text nest (strings skipped), without parsing it."""
    depth = deepest = 0
    for c in _NOT_BRACKET.sub("", _STRINGS.sub("", text)):
        depth += 1 if c in "[{" else -1
        deepest = max(deepest, depth)
    return deepest
