"""Molecule files: read SDF / MOL / XYZ (single files, gzipped files, folders), write SDF / XYZ.

Reading is tolerant of chemistry and strict about syntax: generated molecules are often chemically
invalid (odd valences, clashing atoms), so SDF records are parsed without sanitisation and with the
hydrogens kept; but a record that cannot be read as atoms and coordinates is an error, raised in
strict mode and reported in `ReadResult.errors` otherwise. Records are numbered from 0 in a file,
as in RDKit's SDMolSupplier; messages add the 1-based line number where one is known.

Writing never leaves a half-written file: output goes to a hidden temporary file in the target
folder and is renamed into place (atomic on POSIX) only when the writer closes without an error.
Bonds in written SDF files come from the distance rule (`ead.data.bonds`), which is what every
metric in this package reads, and molecules are written without sanitisation or kekulisation so
that invalid ones are kept rather than dropped.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rdkit import Chem, rdBase

from ..errors import EADError
from .batch import MAX_MOLECULE_ATOMS
from .molecule import protocol_mol
from .elements import SYMBOLS, atomic_number

READ_EXTENSIONS = (".sdf", ".sd", ".mol", ".xyz")
# One limit on |x| for every reader (Å): a molecule spans tens of Å, so a coordinate past this is
# a corrupt file, not chemistry, and would end training in NaN far from its cause.
MAX_ABS_COORD = 1e4
MAX_TEXT_BYTES = 2**31      # text read from one file (after gunzip): bounds a gzip bomb
GZIP_MAGIC = b"\x1f\x8b"
COINCIDENT = 0.01           # Å: atoms closer than this are at one point
WRITE_FORMATS = {".sdf": "sdf", ".sd": "sdf", ".mol": "sdf", ".xyz": "xyz", ".pdb": "pdb"}
MAX_RDKIT_Z = 118

Molecule = tuple[np.ndarray, np.ndarray]


@dataclass
class ReadResult:
    """What `read_molecules` found.

    molecules: (positions float64 [n, 3] Å, atomic_numbers int64 [n]) per molecule.
    names: SDF title / XYZ comment line, or "file:record" where that is blank.
    properties: the SDF data fields of each molecule as strings (empty dicts for XYZ).
    sources: the file each molecule came from (useful for folder inputs).
    charged: per molecule, how many atoms carry a formal charge (SDF `M  CHG`; 0 for XYZ).
    errors: (record index within its file, message naming file and record) per skipped record;
    only filled with strict=False, since strict reading raises at the first bad record.
    """

    molecules: list[Molecule] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    properties: list[dict[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    charged: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.molecules)

    def molecule_set(self):
        """The molecules as a flat `MoleculeSet` (float32 coordinates)."""
        from .batch import MoleculeSet

        return MoleculeSet.from_list(self.molecules)


# ----------------------------------------------------------------------------------------------
# Reading


def read_molecules(path, strict: bool = True) -> ReadResult:
    """Molecules from an .sdf/.sd/.mol/.xyz file (optionally .gz) or a folder of such files.

    A folder is searched recursively; its files are read in sorted path order; hidden files and
    files of other types are skipped. strict=True: the first bad record raises EADError
    ("x.xyz record 3 (line 17): unknown element 'Qq'"). strict=False: bad records are skipped and
    listed in `.errors`. Either way a missing path, an unsupported file type, or an input that
    yields no molecule at all is an EADError.
    """
    path = Path(path)
    if not path.exists():
        raise EADError(f"no such file or folder: {path}")
    result = ReadResult()
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if _regular(p) and _read_format(p) is not None
             and not any(part.startswith(".") for part in p.relative_to(path).parts)),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise EADError(f"folder {path} has no molecule files "
                           f"({', '.join(READ_EXTENSIONS)}, optionally .gz)")
        for f in files:
            _read_file(f, f.relative_to(path).as_posix(), strict, result, in_folder=True)
        if not result.molecules:
            raise EADError(f"no molecules read from folder {path}{_first_error(result)}")
        return result
    if _read_format(path) is None:
        raise EADError(f"unsupported file type: {path.name} "
                       f"(expected {', '.join(READ_EXTENSIONS)}, optionally .gz, or a folder)")
    _read_file(path, path.name, strict, result, in_folder=False)
    if not result.molecules:
        raise EADError(f"no molecules read from {path}{_first_error(result)}")
    return result


def _regular(p: Path) -> bool:
    """A regular file (not a FIFO, socket or device, which a folder read skips)."""
    import stat

    try:
        return stat.S_ISREG(p.stat().st_mode)
    except OSError:
        return False


def _first_error(result: ReadResult) -> str:
    if not result.errors:
        return ""
    return f" ({len(result.errors)} bad records; first: {result.errors[0][1]})"


def _read_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return "xyz" if ext == ".xyz" else "sdf"
    return None


def _read_text(path: Path) -> str:
    """The file's text: a regular file only (a FIFO or a device would block or never end; checked
    before opening), gunzipped when its first bytes are gzip's magic whatever its name, at most
    MAX_TEXT_BYTES. errors="replace": a stray non-UTF-8 byte (e.g. in a title) should cost at most
    its record, which then fails to parse with a message, rather than the whole file."""
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise EADError(f"cannot read {path}: not a regular file")
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            if not compressed and path.name.lower().endswith(".gz"):
                raise EADError(f"cannot read {path}: named .gz but not gzip data")
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if compressed else raw
            data = stream.read(MAX_TEXT_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise EADError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise EADError(f"cannot read {path}: over {MAX_TEXT_BYTES:,} bytes of text")
    return data.decode("utf-8", errors="replace")


def _read_file(path: Path, label: str, strict: bool, result: ReadResult, in_folder: bool) -> None:
    """Append the records of one file to `result`. `label` names the file in molecule names."""
    text = _read_text(path)
    records = _sdf_records(text) if _read_format(path) == "sdf" else _xyz_records(text)
    found, errors_before = 0, len(result.errors)
    for index, line, outcome in records:
        if isinstance(outcome, str):
            where = f"record {index}" + (f" (line {line})" if line else "")
            message = f"{path} {where}: {outcome}"
            if strict:
                raise EADError(message)
            result.errors.append((index, message))
            continue
        (pos, z), name, props, charged = outcome
        result.molecules.append((pos, z))
        result.charged.append(charged)
        result.names.append(name or f"{label}:{index}")
        result.properties.append(props)
        result.sources.append(str(path))
        found += 1
    # An empty file inside a folder is worth a mention (it is probably an interrupted export), but
    # not fatal while the folder as a whole has molecules.
    if in_folder and found == 0 and len(result.errors) == errors_before:
        message = f"{path}: no molecules in file"
        if strict:
            raise EADError(message)
        result.errors.append((0, message))


def _checked(pos: np.ndarray, z: np.ndarray) -> str | None:
    """Why a parsed molecule is unusable, or None."""
    if len(z) == 0:
        return "no atoms"
    if not np.isfinite(pos).all():
        atom = int(np.argmin(np.isfinite(pos).all(1)))
        return f"coordinates of atom {atom + 1} are not finite (NaN or inf)"
    far = np.abs(pos).max(1) > MAX_ABS_COORD
    if far.any():
        atom = int(np.argmax(far))
        return (f"coordinate {float(np.abs(pos[atom]).max()):.3g} Å of atom {atom + 1} is beyond "
                f"±{MAX_ABS_COORD:g} Å (a corrupt record, not a molecule)")
    return None


def has_coincident_atoms(pos: np.ndarray) -> bool:
    """Two atoms of the molecule at one point (closer than COINCIDENT Å); molecules of more than
    MAX_MOLECULE_ATOMS atoms are not looked at (training skips them before any pair is built)."""
    if not 2 <= len(pos) <= MAX_MOLECULE_ATOMS:
        return False
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return bool(d.min() < COINCIDENT)


# RDKit reports parse failures through its error log, wrapped in timestamps, stack traces and a
# "moving to the next molecule" note; these patterns cut that down to the one informative line.
_RDKIT_NOISE = re.compile(
    r"^(\*+|-+|Stacktrace:|\d+# .*|(Pre|Post)-condition Violation|Invariant Violation|"
    r"Violation occurred.*|Failed Expression.*|moving to the beginning of the next molecule)$"
)
_RDKIT_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*(ERROR:\s*)?")


def _rdkit_message(log: str) -> str:
    for raw in log.splitlines():
        line = _RDKIT_PREFIX.sub("", raw).strip()
        if not line or _RDKIT_NOISE.match(line):
            continue
        # RDKit counts lines from where it started parsing this record, not from the top of the
        # file, so its line numbers would mislead; the caller reports the record's first line.
        line = re.sub(r"\s+on line\s*\d+", "", line)
        unknown = re.fullmatch(r"Element '(.*)' not found", line)
        return f"unknown element {unknown.group(1)!r}" if unknown else f"RDKit: {line}"
    return "RDKit could not parse the record"


def _capture_rdkit_log():
    # CaptureErrorLog (recent RDKit) gives the reason a record failed; older versions only let
    # us silence the log, and the message falls back to a generic one.
    capture = getattr(rdBase, "CaptureErrorLog", None)
    return capture() if capture is not None else _NoCapture()


class _NoCapture:
    messages = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sdf_records(text: str) -> Iterator[tuple[int, int | None, object]]:
    """(index, first line, ((pos, z), name, props) or an error message) per SDF record."""
    lines = text.splitlines()
    # First line of each record, by the same "$$$$" delimiter rule RDKit uses; only used in
    # messages, and dropped if our count disagrees with RDKit's.
    starts = [1] + [k + 2 for k, ln in enumerate(lines) if ln.startswith("$$$$")]
    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, sanitize=False, removeHs=False)
    with rdBase.BlockLogs():
        count = len(supplier)
        if len(starts) not in (count, count + 1):
            starts = []
        for index in range(count):
            line = starts[index] if starts else None
            with _capture_rdkit_log() as log:
                mol = supplier[index]
            if mol is None:
                yield index, line, _rdkit_message(log.messages)
                continue
            yield index, line, _from_rdkit(mol)


def _from_rdkit(mol: Chem.Mol):
    z = np.fromiter((a.GetAtomicNum() for a in mol.GetAtoms()), dtype=np.int64, count=mol.GetNumAtoms())
    if (z == 0).any():
        atom = mol.GetAtomWithIdx(int(np.argmin(z)))
        return f"atom {atom.GetIdx() + 1} is a query or dummy atom ({atom.GetSymbol()!r}), not an element"
    if mol.GetNumConformers() == 0:
        pos = np.zeros((len(z), 3))
    else:
        pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64).reshape(-1, 3)
    problem = _checked(pos, z)
    if problem:
        return problem
    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
    props = {k: mol.GetProp(k) for k in mol.GetPropNames()}
    charged = sum(a.GetFormalCharge() != 0 for a in mol.GetAtoms())
    return (pos, z), name, props, charged


def _is_count_line(tokens: list[str]) -> bool:
    return len(tokens) == 1 and tokens[0].isdigit()


def _atom_from_tokens(tokens: list[str]) -> tuple[int, list[float]] | str:
    """(atomic number, [x, y, z]) from an XYZ atom line's tokens, or why not."""
    if len(tokens) < 4:
        return f"atom line needs an element and 3 coordinates, got {' '.join(tokens)!r}"
    element = tokens[0]
    if element.isdigit():
        z = int(element)
        if not 0 < z < len(SYMBOLS):
            return f"unknown element {element!r}"
    else:
        try:
            z = atomic_number(element)
        except EADError as e:
            return str(e)
    try:
        xyz = [float(t) for t in tokens[1:4]]
    except ValueError:
        return f"coordinates are not numbers: {' '.join(tokens[1:4])!r}"
    return z, xyz


def _looks_like_atom(tokens: list[str]) -> bool:
    if len(tokens) < 4:
        return False
    try:
        [float(t) for t in tokens[1:4]]
    except ValueError:
        return False
    return True


_KEY_VALUE = re.compile(r'([A-Za-z_][\w.-]*)=("[^"]*"|\S+)')


def _comment_fields(comment: str) -> dict[str, str]:
    """key=value pairs of an XYZ comment line (what MoleculeWriter writes; extended XYZ too)."""
    return {k: v.strip('"') for k, v in _KEY_VALUE.findall(comment)}


def _xyz_records(text: str) -> Iterator[tuple[int, int | None, object]]:
    """(index, line, ((pos, z), comment, {}) or an error message) per XYZ block.

    Own parsing (SDF goes through RDKit above): RDKit's MolFromXYZBlock reads one block, so a
    multi-molecule file, the resume after a damaged block and line-numbered errors need this.

    After a bad block, reading resumes at the next line that looks like a count line (one
    integer), so one damaged block does not take the rest of the file with it.
    """
    lines = text.splitlines()
    tokens = [ln.split() for ln in lines]
    n_lines = len(lines)

    def next_count(k: int) -> int:
        while k < n_lines and not _is_count_line(tokens[k]):
            k += 1
        return k

    k, index = 0, 0
    while True:
        while k < n_lines and not tokens[k]:
            k += 1
        if k >= n_lines:
            return
        start = k
        if not _is_count_line(tokens[start]):
            yield index, start + 1, f"expected an atom count line, got {lines[start].strip()[:60]!r}"
            k, index = next_count(start + 1), index + 1
            continue
        n = int(tokens[start][0])
        if n > n_lines - start - 2:   # before allocating n atoms: the lines must be there
            yield index, start + 1, (f"file ends after {max(0, n_lines - start - 2):,} of the {n:,} "
                                     "atoms announced by the count line")
            k, index = next_count(start + 1), index + 1
            continue
        if start + 1 >= n_lines:
            yield index, start + 1, f"file ends after the count line ({n} atoms announced)"
            return
        comment = lines[start + 1].strip()
        if n == 0:
            yield index, start + 1, "no atoms (count line is 0)"
            k, index = start + 2, index + 1
            continue
        z = np.empty(n, dtype=np.int64)
        pos = np.empty((n, 3), dtype=np.float64)
        error, k = None, start + 2
        for a in range(n):
            if k >= n_lines:
                error = (start + 1, f"file ends after {a} of the {n} atoms announced by the count line")
                break
            if not tokens[k] or _is_count_line(tokens[k]):
                # A blank line or the next block's count line inside the atom block: the count
                # line promised more atoms than the block has. The count line is what is wrong,
                # so it is the line reported; reading resumes at the line found here.
                error = (start + 1, f"block has {a} atom lines but its count line says {n}")
                break
            parsed = _atom_from_tokens(tokens[k])
            if isinstance(parsed, str):
                error = (k + 1, parsed)
                k += 1
                break
            z[a], pos[a] = parsed
            k += 1
        if error is None:
            follow = k
            while follow < n_lines and not tokens[follow]:
                follow += 1
            if follow < n_lines and _looks_like_atom(tokens[follow]):
                error = (start + 1, f"count line says {n} atom{'s' * (n != 1)} but more atom "
                                    "lines follow")
                k = follow
        if error is not None:
            yield index, error[0], error[1]
            k, index = next_count(k), index + 1
            continue
        problem = _checked(pos, z)
        if problem:
            a = int(re.search(r"atom (\d+)", problem).group(1)) - 1
            yield index, start + 3 + a, problem
        else:
            yield index, start + 1, ((pos, z), comment, _comment_fields(comment), 0)
        index += 1


# ----------------------------------------------------------------------------------------------
# Writing


def _array(x) -> np.ndarray:
    # Samplers hand over torch tensors (possibly on a GPU, possibly requiring grad).
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _molecule(item, where: str, max_z: int) -> Molecule:
    """Validated (positions float64 [n, 3], atomic numbers int64 [n]) or EADError."""
    try:
        pos, z = item
        pos, z = _array(pos), _array(z)
    except (TypeError, ValueError):  # not a pair, or ragged nested lists
        raise EADError(f"{where}: expected a (positions [n, 3], atomic_numbers [n]) pair") from None
    if pos.ndim != 2 or pos.shape[1] != 3 or not np.issubdtype(pos.dtype, np.number):
        raise EADError(f"{where}: positions must be numbers of shape [n, 3], got shape {pos.shape}")
    if z.ndim != 1 or len(z) != len(pos):
        raise EADError(f"{where}: {len(pos)} positions but atomic numbers of shape {z.shape}")
    pos = pos.astype(np.float64)
    if not np.issubdtype(z.dtype, np.integer):
        if not (np.issubdtype(z.dtype, np.number) and np.all(np.mod(z, 1) == 0)):
            raise EADError(f"{where}: atomic numbers must be integers")
    z = z.astype(np.int64)
    problem = _checked(pos, z)
    if problem:
        raise EADError(f"{where}: {problem}")
    bad = (z < 1) | (z > max_z)
    if bad.any():
        raise EADError(f"{where}: atomic number {int(z[np.argmax(bad)])} is not an element "
                       f"this format can hold (1-{max_z})")
    return pos, z


def _field_text(key: str, value) -> str:
    """A property value as SD data text: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray) or hasattr(value, "tolist"):
        value = value.tolist()
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise EADError(f"property {key!r}: cannot write a {type(value).__name__} "
                       "(use a string, number, bool, list or dict)") from None


def _fields(mapping, what: str) -> dict[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise EADError(f"{what} must be a dict, got {type(mapping).__name__}")
    out = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key.strip() or any(c in key for c in "<>\r\n"):
            raise EADError(f"{what}: bad field name {key!r} (a non-empty string without <, > "
                           "or line breaks)")
        if key.startswith("_"):
            # RDKit treats "_"-prefixed properties as private and readers would not show them.
            raise EADError(f"{what}: field name {key!r} may not start with '_'")
        out[key] = _field_text(key, value)
    return out


def _one_line(text) -> str:
    return " ".join(str(text).splitlines()).strip()


def _sd_value_lines(value: str) -> list[str]:
    # An SD data value ends at the first blank line and a record at "$$$$", so blank lines are
    # dropped and a "$$$$" line is indented; one-line values (the usual case) pass unchanged.
    lines = [ln if not ln.startswith("$$$$") else " " + ln for ln in value.splitlines() if ln.strip()]
    return lines or [""]


def to_rdkit(positions, atomic_numbers, properties: dict | None = None, name: str | None = None) -> Chem.Mol:
    """An unsanitised RDKit molecule with distance-rule bonds, a 3D conformer, the given name
    (`_Name`) and properties (strings as is, other values as JSON)."""
    pos, z = _molecule((positions, atomic_numbers), "molecule", MAX_RDKIT_Z)
    mol = protocol_mol(pos, z)
    if name is not None:
        mol.SetProp("_Name", _one_line(name))
    for key, value in _fields(properties, "properties").items():
        mol.SetProp(key, value)
    return mol


def _sdf_record(pos, z, name: str, fields: dict[str, str]) -> str:
    mol = protocol_mol(pos, z)
    mol.SetProp("_Name", name)
    # No kekulisation (the distance rule makes no aromatic bonds, and an invalid molecule could
    # not be kekulised anyway); RDKit switches to V3000 by itself past 999 atoms or bonds or
    # coordinates too large for V2000's fixed columns.
    parts = [Chem.MolToMolBlock(mol, kekulize=False)]
    for key, value in fields.items():
        parts.append(f"> <{key}>\n" + "\n".join(_sd_value_lines(value)) + "\n\n")
    parts.append("$$$$\n")
    return "".join(parts)


def _pdb_record(pos, z, name: str, fields: dict[str, str], model: int) -> str:
    """One molecule as a PDB MODEL: HETATM records, CONECT records of the distance-rule bonds,
    the name as COMPND and the fields as REMARK lines (the file's END comes at close)."""
    block = Chem.MolToPDBBlock(protocol_mol(pos, z), flavor=2)   # flavor 2: no MASTER line
    atoms = [ln for ln in block.splitlines() if ln.startswith(("HETATM", "CONECT"))]
    head = [f"MODEL     {model:4d}"] + ([f"COMPND    {name[:70]}"] if name else [])
    head += [f"REMARK   1 {key}: {' '.join(_sd_value_lines(v))}"[:80] for key, v in fields.items()]
    return "\n".join(head + atoms + ["ENDMDL"]) + "\n"


def _xyz_value(value: str) -> str:
    if value and not re.search(r"[\s\"'=]", value):
        return value
    return json.dumps(value)


def _xyz_record(pos, z, comment: str) -> str:
    rows = [f"{len(z)}", comment]
    for zi, (x, y, w) in zip(z.tolist(), pos.tolist()):
        rows.append(f"{SYMBOLS[zi]:<2} {x:15.8f} {y:15.8f} {w:15.8f}")
    return "\n".join(rows) + "\n"


class MoleculeWriter:
    """Streaming, all-or-nothing writer of an .sdf or .xyz file (optionally .gz).

        with MoleculeWriter("samples.sdf", metadata={"ead_seed": 0}) as out:
            for chunk in chunks:
                out.write(chunk, names=..., properties=...)

    Records go to a hidden temporary file next to `path`, which replaces `path` only when the
    writer closes normally; an exception inside the block (or `abort()`) removes it, leaving any
    earlier file at `path` untouched. `metadata` (dict) is written into every record: as SD data
    fields in SDF, as key=value pairs after the name on the XYZ comment line. Per-molecule
    `properties` are written the same way. `format` ("sdf" / "xyz") overrides the extension.
    Without `with`, call `close()` to commit.
    """

    def __init__(self, path, format: str | None = None, metadata: dict | None = None):
        self.path = Path(path)
        name = self.path.name.lower()
        self.compressed = name.endswith(".gz")
        if format is None:
            ext = Path(name[:-3] if self.compressed else name).suffix
            if ext not in WRITE_FORMATS:
                raise EADError(f"cannot write {self.path.name}: unsupported file type "
                               f"(use .sdf, .xyz or .pdb, optionally .gz)")
            format = WRITE_FORMATS[ext]
        format = str(format).lower().lstrip(".")
        if format not in ("sdf", "xyz", "pdb"):
            raise EADError(f"unsupported output format {format!r} (use 'sdf', 'xyz' or 'pdb')")
        ext = Path(name[:-3] if self.compressed else name).suffix
        if WRITE_FORMATS.get(ext, format) != format:
            # e.g. write_sdf("out.xyz"): almost certainly a mistake, and a reader would
            # misparse the file by its extension.
            raise EADError(f"cannot write {format.upper()} to {self.path.name}: the extension "
                           f"says {WRITE_FORMATS[ext].upper()}")
        self.format = format
        self.metadata = _fields(metadata, "metadata")
        if format == "xyz":
            _check_xyz_keys(self.metadata, "metadata")
        self.count = 0
        self._tmp: Path | None = None
        self._raw = None
        self._text = None
        self._closed = False

    # -- lifecycle

    def __enter__(self) -> "MoleculeWriter":
        self._open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _open(self) -> None:
        if self._closed:
            raise EADError(f"writer for {self.path} is already closed")
        if self._text is not None:
            return
        if self.path.is_dir():
            raise EADError(f"cannot write {self.path}: it is a folder")
        parent = self.path.parent
        self._tmp = parent / f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            # os.open with mode 0o666 lets the umask decide the final permissions, as a plain
            # open() would; O_EXCL guards against reusing someone else's file.
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as e:
            self._tmp = None
            raise EADError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._raw = os.fdopen(fd, "wb")
        if self.compressed:
            # mtime=0 keeps the gzip bytes reproducible for identical content.
            stream = gzip.GzipFile(filename=self.path.name[:-3], mode="wb", fileobj=self._raw, mtime=0)
        else:
            stream = self._raw
        self._text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n", write_through=False)

    def close(self) -> None:
        """Finish the file and move it into place (a no-op once closed)."""
        if self._closed:
            return
        self._open()  # a writer closed without any write still produces its (empty) file
        try:
            if self.format == "pdb":
                self._text.write("END\n")
            stream = self._text.detach()  # flushes; the raw file stays open for fsync below
            if self.compressed:
                stream.close()  # writes the gzip trailer
            self._raw.flush()
            os.fsync(self._raw.fileno())  # the rename must not land before the data
            self._raw.close()
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.abort()
            raise EADError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._text = self._raw = self._tmp = None
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far; `path` is left as it was."""
        self._closed = True
        for handle in (self._text, self._raw):
            if handle is not None:
                try:
                    handle.close()
                except (OSError, ValueError):
                    pass  # closing a half-written gzip stream may fail; the file goes anyway
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass
        self._text = self._raw = self._tmp = None

    def __del__(self):
        # A writer dropped without close() must not leave its temporary file behind.
        if getattr(self, "_tmp", None) is not None:
            self.abort()

    # -- records

    def write(self, molecules: Iterable, names=None, properties=None) -> None:
        """Append molecules ((positions, atomic numbers) pairs, or a MoleculeSet). All of them
        are checked and formatted before anything is written, so a bad chunk writes nothing."""
        if self._closed:
            raise EADError(f"writer for {self.path} is already closed")
        molecules = list(molecules)
        names = [""] * len(molecules) if names is None else list(names)
        properties = [None] * len(molecules) if properties is None else list(properties)
        if len(names) != len(molecules) or len(properties) != len(molecules):
            raise EADError(f"{len(molecules)} molecules but {len(names)} names and "
                           f"{len(properties)} property dicts")
        max_z = MAX_RDKIT_Z if self.format != "xyz" else len(SYMBOLS) - 1
        records = []
        for k, (item, name, props) in enumerate(zip(molecules, names, properties)):
            where = f"molecule {self.count + k}"
            pos, z = _molecule(item, where, max_z)
            fields = _fields(props, f"{where} properties")
            clash = fields.keys() & self.metadata.keys()
            if clash:
                # Either value silently winning would lose information the caller meant to keep.
                raise EADError(f"{where}: properties {sorted(clash)} are also metadata fields")
            name = _one_line("" if name is None else name)
            if self.format == "sdf":
                records.append(_sdf_record(pos, z, name, {**fields, **self.metadata}))
            elif self.format == "pdb":
                records.append(_pdb_record(pos, z, name, {**fields, **self.metadata}, self.count + k + 1))
            else:
                _check_xyz_keys(fields, f"{where} properties")
                pairs = [f"{key}={_xyz_value(v)}" for key, v in {**fields, **self.metadata}.items()]
                records.append(_xyz_record(pos, z, " ".join([name, *pairs]).strip()))
        self._open()
        try:
            self._text.write("".join(records))
        except OSError as e:
            self.abort()
            raise EADError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.count += len(records)


def _check_xyz_keys(fields: dict[str, str], what: str) -> None:
    for key in fields:
        if re.search(r"[\s=\"']", key):
            raise EADError(f"{what}: field name {key!r} cannot go on an XYZ comment line "
                           "(no spaces, quotes or '=')")


def write_sdf(path, molecules, names=None, properties=None, metadata=None) -> None:
    """Write molecules to an SDF file at once (all-or-nothing); see `MoleculeWriter`."""
    with MoleculeWriter(path, format="sdf", metadata=metadata) as out:
        out.write(molecules, names=names, properties=properties)


def write_xyz(path, molecules, comments=None) -> None:
    """Write molecules to a multi-molecule XYZ file at once; `comments` fill the comment lines."""
    with MoleculeWriter(path, format="xyz") as out:
        out.write(molecules, names=comments)
