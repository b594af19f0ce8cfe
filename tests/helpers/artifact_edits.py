"""Artifacts for the C++ tests, edited the way an attacker or a careless hand would: copies of a `.pt2` and its
sidecar, sidecars rewritten as-is (no validation), packages whose embedded contract is replaced or removed
(checksums in the sidecar updated, so only the edit differs), plugin libraries that leave a mark when loaded,
and PNGs of any size without their pixels in memory."""
import copy
import json
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

from helpers.mutations import jpeg_frame
from mp_deploy.artifacts import CONTRACT_ENTRY, contract_json, contract_of, sidecar_path
from mp_deploy.util import sha256_file


def copy_artifact(pt2: Path, folder: Path, name: str) -> Path:
    dst = Path(folder) / name
    shutil.copyfile(pt2, dst)
    shutil.copyfile(sidecar_path(pt2), sidecar_path(dst))
    return dst


def read_meta(pt2: Path) -> dict:
    return json.loads(sidecar_path(pt2).read_text())


def write_meta(pt2: Path, meta: dict) -> None:
    sidecar_path(pt2).write_text(json.dumps(meta, indent=2))


def edit_meta(pt2: Path, edit) -> dict:
    """Apply `edit(meta)` (in place) to the sidecar of pt2; returns the edited sidecar."""
    meta = read_meta(pt2)
    edit(meta)
    write_meta(pt2, meta)
    return meta


def rewrite_contract(pt2: Path, contract, compress: bool = False) -> None:
    """Replace the contract inside pt2 by `contract` (a dict, or raw text; None removes it), then record the
    package's new size and checksum in its sidecar."""
    pt2 = Path(pt2)
    tmp = pt2.with_suffix(".tmp")
    with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(tmp, "w") as dst:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            if info.filename.split("/", 1)[-1] != CONTRACT_ENTRY:
                dst.writestr(info, src.read(info), compress_type=info.compress_type)
        if contract is not None:
            text = contract if isinstance(contract, str) else contract_json(contract)
            dst.writestr(f"{root}/{CONTRACT_ENTRY}", text,
                         compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    tmp.replace(pt2)
    edit_meta(pt2, lambda m: m.update(file_sha256=sha256_file(pt2), file_bytes=pt2.stat().st_size))


def rebind(pt2: Path, edit) -> dict:
    """Edit the sidecar and the contract inside alike (a consistent, re-signed artifact): `edit(meta)`."""
    meta = copy.deepcopy(read_meta(pt2))
    edit(meta)
    write_meta(pt2, meta)
    rewrite_contract(pt2, contract_of(meta))
    return read_meta(pt2)


def build_plugin(compiler: str, folder: Path, name: str, marker: Path) -> Path:
    """A shared library whose constructor writes `marker` when it is loaded (dlopen runs it)."""
    src = Path(folder) / f"{name}.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void mark(void) {\n'
                   f'  FILE* f = fopen("{marker}", "w");\n  if (f) {{ fputs("loaded\\n", f); fclose(f); }}\n}}\n')
    lib = Path(folder) / name
    subprocess.run([compiler, "-x", "c", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    src.unlink()
    return lib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(width: int, height: int) -> bytes:
    """A valid black RGB PNG of any size, compressed row by row (10000x10000 is 300 KB, never 300 MB)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header claims another size; its data is the original's."""
    data = bytearray(jpeg)
    sof = jpeg_frame(data)
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
