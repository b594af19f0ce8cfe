"""mp_infer and the C++ image reader against hostile files: paths that are not regular files, names at the file
system's limit, images Python and C++ must judge alike, sizes declared by a file, and a seeded fuzz of special
files in every role.

The rules are mp_deploy/files.py's and mp_deploy/images.py's, mirrored in cpp/src/files.cpp and image_io.cpp:

- an input (image, engine, sidecar) that is not a regular file is refused with one line naming what it is, at
  once: opened with O_NONBLOCK and checked with fstat before a byte is read (a FIFO used to hang mp_infer);
- an output path where something other than a regular file is (device, FIFO, socket, folder, symbolic link) is
  refused before anything runs and again right before the rename (run as root, `--output /dev/full` used to
  replace the device node), and left as it was;
- temporary names are short (.mp_infer-XXXXXX), so a 250-byte output name works;
- images: sides under MIN_SIDE refused from the header, as check_rgb; CMYK (and YCCK) JPEGs, 16-bit gray PNGs
  and EXIF / XMP orientation handled as Pillow handles them (pixels compared with Python's read_rgb); the pixel
  cap and libpng's own limits agree with Python's, and a declared size is never allocated for a file too small
  to hold it;
- numbers from the sidecar are compared whatever their size (a byte count of 2**63 used to skip the size check),
  and the JSON limits of Python's parse_json (nesting, digits, byte order mark) are C++'s too.

Nothing here touches /dev: every special file is a FIFO, socket, folder or link made in tmp_path. Builds and the
.pt2 come from test_cpp.py's fixtures (one build and one export per session; MP_CPP_BUILD_DIR and
MP_CPP_DEPTH_PT2 reuse earlier ones).
"""
import json
import os
import random
import signal
import socket
import stat
import struct
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.artifact_edits import black_png, copy_artifact, edit_meta, jpeg_with_size, read_meta, rewrite_contract
from mp_deploy.artifacts import ArtifactError, contract_of, read_sidecar, sidecar_path
from mp_deploy.errors import DataError
from mp_deploy.images import MAX_PIXELS, MIN_SIDE, read_image, read_rgb
from mp_deploy.util import sha256_file
from test_cpp import SIZE, _compiler, _image, _peak_rss, preload_library, shared_build, shared_depth_pt2

HANG_GUARD = 120  # seconds: a subprocess still running then is a hang (no test asserts on time)


@pytest.fixture(scope="module")
def build(tmp_path_factory):  # test_cpp.py's: one build and one export per session
    return shared_build(tmp_path_factory)


@pytest.fixture(scope="module")
def depth_pt2(build, tmp_path_factory):
    return shared_depth_pt2(tmp_path_factory)


@pytest.fixture(scope="module")
def mp_infer(build, depth_pt2):
    return build.wait()


def _run(exe, *args, env=None):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=HANG_GUARD,
                          env=env, check=False)


def _one_error(r, message: str, prefix: str = "mp_infer") -> None:
    """Exit 1 with exactly one `<prefix>: error:` line holding `message`."""
    assert r.returncode == 1, f"exit {r.returncode}, stderr:\n{r.stderr}"
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"{prefix}: error: "), r.stderr
    assert message in r.stderr, r.stderr


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".mp_infer-"))


def _what(path: Path):
    """What is at `path`, without following a link: (file type, link target or None)."""
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), os.readlink(path) if stat.S_ISLNK(st.st_mode) else None


@pytest.fixture
def read_image_exe(build):
    return build.wait().parent / "mp_read_image"


def _cpp_pixels(exe, path: Path, tmp_path: Path) -> np.ndarray:
    """mp::read_image's RGB pixels of `path` (through the mp_read_image test program)."""
    out = tmp_path / (path.name + ".ppm")
    r = _run(exe, path, out)
    assert r.returncode == 0, r.stderr
    magic, size, depth, data = out.read_bytes().split(b"\n", 3)
    assert magic == b"P6" and depth == b"255"
    w, h = map(int, size.split())
    return np.frombuffer(data, np.uint8).reshape(h, w, 3)


def _socket_at(path: Path) -> socket.socket:
    """A bound Unix socket at `path` (the caller closes it); skips where the path is too long for one."""
    if len(os.fsencode(path)) >= 100:
        pytest.skip(f"{path} is too long for a Unix socket address")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


# ---------------------------------------------------------------- inputs that are not regular files

def _special_input(kind: str, path: Path, keep: list) -> str:
    """Make `kind` at `path`; returns the words mp_infer's message must hold. `keep` gets what to close after."""
    if kind in ("fifo", "fifo with a writer"):
        os.mkfifo(path)
        if kind == "fifo with a writer":  # a writer that never writes: the old reader blocked in read, not open
            keep.append(os.open(path, os.O_RDWR | os.O_NONBLOCK))
        return "not a regular file (a FIFO)"
    if kind == "folder":
        path.mkdir()
        return "not a regular file (a folder)"
    if kind == "symbolic link loop":
        os.symlink(path.name + ".b", path)
        os.symlink(path.name, str(path) + ".b")
        return "not a regular file (a symbolic link loop)"
    if kind == "link to a fifo":  # links are followed: what they lead to is named
        os.mkfifo(str(path) + ".fifo")
        os.symlink(path.name + ".fifo", path)
        return "not a regular file (a FIFO)"
    if kind == "socket":
        keep.append(_socket_at(path))
        return "not a regular file (a socket)"
    raise ValueError(kind)


INPUT_KINDS = ["fifo", "fifo with a writer", "folder", "symbolic link loop", "link to a fifo", "socket"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_input_not_a_regular_file(mp_infer, depth_pt2, tmp_path, kind):
    """--input that is a FIFO (the old mp_infer blocked in open forever; with a writer attached, in read), a
    folder, a link loop, a link to a FIFO or a socket: refused at once with one line naming what it is, and
    nothing written. The subprocess timeout is the hang guard."""
    keep = []
    try:
        message = _special_input(kind, tmp_path / "in.png", keep)
        out = tmp_path / "out"
        out.mkdir()
        r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", out / "vis.png",
                 "--npy", out / "depth.npy")
    finally:
        for k in keep:
            k.close() if isinstance(k, socket.socket) else os.close(k)
    _one_error(r, f"cannot read image {tmp_path / 'in.png'}: {message}")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("role", ["engine", "sidecar"])
def test_engine_or_sidecar_fifo(mp_infer, depth_pt2, tmp_path, role):
    """The engine and its sidecar are inputs too: a FIFO in either place is refused by what it is, never
    opened (the old messages said "artifact not found" and "has no sidecar")."""
    pt2 = tmp_path / "model.pt2"
    if role == "engine":
        os.mkfifo(pt2)
        sidecar_path(pt2).write_bytes(sidecar_path(depth_pt2).read_bytes())
    else:
        pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
        os.remove(sidecar_path(pt2))
        os.mkfifo(sidecar_path(pt2))
    _image(tmp_path / "in.png", SIZE, SIZE)
    r = _run(mp_infer, "--engine", pt2, "--input", tmp_path / "in.png", "--npy", tmp_path / "depth.npy")
    what = "artifact" if role == "engine" else "sidecar"
    _one_error(r, f"{what} {pt2 if role == 'engine' else sidecar_path(pt2)}: not a regular file (a FIFO)")
    assert not (tmp_path / "depth.npy").exists()


def test_sigterm_stops_a_run(mp_infer, depth_pt2, tmp_path):
    """SIGTERM stops mp_infer wherever it is, also when its parent left SIGTERM ignored (an ignored signal is
    inherited through exec): here in the checksum of a 4 GiB sparse artifact (the size matches the sidecar, so
    the whole file is hashed before the mismatch is found, far longer than mp_infer takes to start). SIGTERM is
    sent until the process ends; without mp_infer's reset to the default action it runs the hash to its end and
    exits 1 instead of dying by the signal. The timeout is the hang guard."""
    pt2 = tmp_path / "model.pt2"
    size = 4 << 30
    with open(pt2, "wb") as f:
        f.truncate(size)  # sparse: no disk space used
    sidecar_path(pt2).write_bytes(sidecar_path(depth_pt2).read_bytes())
    edit_meta(pt2, lambda meta: meta.update(file_bytes=size))
    _image(tmp_path / "in.png", SIZE, SIZE)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # for the child to inherit (pytest's main thread)
    try:
        proc = subprocess.Popen([str(mp_infer), "--engine", str(pt2), "--input", str(tmp_path / "in.png"),
                                 "--npy", str(tmp_path / "depth.npy")], stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    deadline = time.monotonic() + HANG_GUARD  # the hang guard, not an assertion on time
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    assert proc.returncode == -signal.SIGTERM, f"exit {proc.returncode}: {stderr}"
    assert not (tmp_path / "depth.npy").exists()


# ---------------------------------------------------------------- outputs that must not be replaced

def _special_output(kind: str, path: Path, keep: list) -> str:
    """Make `kind` at the output path `path`; returns the kind mp_infer's message must name."""
    if kind == "fifo":
        os.mkfifo(path)
        return "a FIFO"
    if kind == "folder":
        path.mkdir()
        (path / "inside.txt").write_text("kept")
        return "a folder"
    if kind == "link to a file":  # even a link to a regular file: the rename would replace the link itself
        (path.parent / "target.txt").write_text("the link's target")
        os.symlink("target.txt", path)
        return "a symbolic link"
    if kind == "dangling link":
        os.symlink("nowhere", path)
        return "a symbolic link"
    if kind == "socket":
        keep.append(_socket_at(path))
        return "a socket"
    raise ValueError(kind)


OUTPUT_KINDS = ["fifo", "folder", "link to a file", "dangling link", "socket"]


@pytest.mark.parametrize("option", ["--output", "--raw", "--npy"])
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_output_not_a_regular_file(mp_infer, depth_pt2, tmp_path, kind, option):
    """An output path where a FIFO, a folder, a link or a socket is: refused with one line naming it (as root the
    old rename replaced them, /dev/full included), the thing still there as it was, no other output written and
    no temporary left."""
    _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    paths = {"--output": out / "vis.png", "--raw": out / "raw.png", "--npy": out / "depth.npy"}
    keep = []
    try:
        named = _special_output(kind, paths[option], keep)
        before = _what(paths[option])
        r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png",
                 *[a for o, p in paths.items() for a in (o, p)])
    finally:
        for k in keep:
            k.close()
    _one_error(r, f"{option} {paths[option]}: {named} is there; refusing to replace what is not a regular file")
    assert _what(paths[option]) == before
    if kind == "folder":
        assert (paths[option] / "inside.txt").read_text() == "kept"
    if kind == "link to a file":
        assert (out / "target.txt").read_text() == "the link's target"
    left = {p.name for p in out.iterdir()} - {paths[option].name, "target.txt"}
    assert left == set(), f"left behind: {left}"


def test_output_checked_before_any_work(mp_infer, tmp_path):
    """The output check comes first: with an engine that does not exist and an image that would be refused,
    the one error is still the FIFO at --output (nothing was read or loaded before it)."""
    os.mkfifo(tmp_path / "vis.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "in.png")
    r = _run(mp_infer, "--engine", tmp_path / "absent.pt2", "--input", tmp_path / "in.png", "--output",
             tmp_path / "vis.png")
    _one_error(r, "--output")
    assert "a FIFO is there" in r.stderr and stat.S_ISFIFO(os.lstat(tmp_path / "vis.png").st_mode)


# fsync is the last thing an output does before the commit's renames (OutputFile::finish): the first call
# makes a FIFO at $MP_TEST_MKFIFO, something appearing at an output path after mp_infer's first check
FIFO_ON_FSYNC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/stat.h>
int fsync(int fd) {
  static int done;
  const char* path = getenv("MP_TEST_MKFIFO");
  if (path && !done) { mkfifo(path, 0644); done = 1; }
  return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}
"""


def test_output_checked_again_before_the_rename(mp_infer, depth_pt2, tmp_path):
    """A FIFO that appears at --raw while the run writes (made by an LD_PRELOAD shim at the first fsync, after
    the check at the start passed) is refused right before the rename: still a FIFO, the outputs already
    renamed undone, a file that was at --output before put back, no temporary left."""
    shim = preload_library(tmp_path, "fifo_on_fsync", FIFO_ON_FSYNC)
    _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "vis.png").write_text("the previous preview")
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", out / "vis.png",
             "--raw", out / "raw.png", "--npy", out / "depth.npy",
             env={**os.environ, "LD_PRELOAD": str(shim), "MP_TEST_MKFIFO": str(out / "raw.png")})
    _one_error(r, f"output {out / 'raw.png'}: a FIFO is there; refusing to replace what is not a regular file")
    assert stat.S_ISFIFO(os.lstat(out / "raw.png").st_mode)
    assert sorted(p.name for p in out.iterdir()) == ["raw.png", "vis.png"]
    assert (out / "vis.png").read_text() == "the previous preview"


def test_long_output_names(mp_infer, depth_pt2, tmp_path):
    """Output names of 250 bytes, where the file system takes 255: the old temporaries (".<name>.XXXXXX")
    were 258 bytes and every such run failed; the short ones fit. The files are complete and nothing else is
    left."""
    if os.pathconf(tmp_path, "PC_NAME_MAX") < 255:
        pytest.skip("this file system takes names of fewer than 255 bytes")
    img = _image(tmp_path / "in.png", 40, 48)
    out = tmp_path / "out"
    out.mkdir()
    vis, npy = out / ("v" * 246 + ".png"), out / ("d" * 246 + ".npy")
    assert len(vis.name) == len(npy.name) == 250
    (out / vis.name).write_text("replaced")  # an existing file: its backup name must fit too
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", vis, "--npy", npy)
    assert r.returncode == 0, r.stderr
    assert np.array(Image.open(vis)).shape == img.shape[:2]
    assert np.load(npy).shape == (1, 1, SIZE, SIZE)
    assert sorted(p.name for p in out.iterdir()) == sorted([vis.name, npy.name])


# ---------------------------------------------------------------- the same image rules as Python

def _python_verdict(path: Path) -> str | None:
    """None when Python's read_image (read_rgb + check_rgb, what predict reads) takes the file, else its error."""
    try:
        read_image(path)
        return None
    except DataError as e:
        return str(e)


def test_min_side_is_pythons(mp_infer):
    """The shortest side mp_infer takes is Python's MIN_SIDE (its --help states it, from mp::min_side())."""
    r = _run(mp_infer, "--help")
    assert r.returncode == 0
    assert f"with a side under {MIN_SIDE} pixels are refused" in r.stdout, r.stdout
    assert f"Images of more than {MAX_PIXELS} pixels" in r.stdout, r.stdout


@pytest.mark.parametrize("h, w", [(1, 1), (31, 64), (64, 31), (31, 31), (32, 32), (32, 200), (200, 32)])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_small_images_as_python(read_image_exe, tmp_path, h, w, suffix):
    """Sides under MIN_SIDE are refused by C++ as by Python's check_rgb (mp_infer used to upscale a 1x1 PNG),
    from the header, with the same words; 32 is taken by both."""
    path = tmp_path / f"in{suffix}"
    Image.fromarray(np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    python = _python_verdict(path)
    r = _run(read_image_exe, path, tmp_path / "out.ppm")
    if min(h, w) < MIN_SIDE:
        assert python is not None and f"{w}x{h} is too small (sides of at least {MIN_SIDE} pixels)" in python
        _one_error(r, f"is {w}x{h}: too small (sides of at least {MIN_SIDE} pixels)", "mp_read_image")
    else:
        assert python is None and r.returncode == 0, (python, r.stderr)


def test_one_pixel_image_refused_by_mp_infer(mp_infer, depth_pt2, tmp_path):
    """mp_infer itself: a 1x1 PNG is refused with one line, nothing written (it used to be resized to 64x64)."""
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    out.mkdir()
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", out / "vis.png")
    _one_error(r, f"is 1x1: too small (sides of at least {MIN_SIDE} pixels)")
    assert list(out.iterdir()) == []


def _test_picture(h: int = 37, w: int = 45, seed: int = 0) -> np.ndarray:
    """Gradients with noise: both flat and busy blocks for a JPEG coder."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256], -1)
    noise = np.random.default_rng(seed).integers(-40, 41, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _cmyk_picture(h: int = 37, w: int = 45) -> Image.Image:
    """A CMYK image with ink in all four channels (convert("CMYK") from RGB leaves K at 0, where Pillow's
    conversion and the naive 255 - min(255, c + k) agree)."""
    x = np.mgrid[0:h, 0:w][1]
    k = (x * 255 // (w - 1)).astype(np.uint8)  # no black to full black, left to right
    cmy = _test_picture(h, w)
    return Image.frombytes("CMYK", (w, h), np.concatenate([cmy, k[..., None]], -1).tobytes())


def _without_adobe_marker(jpeg: bytes) -> bytes:
    """The JPEG with its APP14 "Adobe" segments removed (Pillow still reads the samples Adobe-inverted)."""
    out, pos = bytearray(jpeg[:2]), 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF and jpeg[pos + 1] != 0xDA:
        length = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if not (jpeg[pos + 1] == 0xEE and jpeg[pos + 4:pos + 9] == b"Adobe"):
            out += jpeg[pos:pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


# libjpeg writing YCCK (Adobe transform 2) from raw CMYK samples: Pillow cannot write one
YCCK_WRITER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
int main(int argc, char** argv) {  /* ycck IN.raw W H OUT.jpg */
  int w = atoi(argv[2]), h = atoi(argv[3]);
  unsigned char* data = malloc((size_t)w * h * 4);
  FILE* in = fopen(argv[1], "rb");
  if (!in || fread(data, 4, (size_t)w * h, in) != (size_t)w * h) return 1;
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  FILE* out = fopen(argv[4], "wb");
  jpeg_stdio_dest(&c, out);
  c.image_width = w; c.image_height = h; c.input_components = 4; c.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_colorspace(&c, JCS_YCCK);
  jpeg_set_quality(&c, 90, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = data + (size_t)c.next_scanline * w * 4;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  fclose(out);
  return 0;
}
"""

# Tolerance for JPEGs, C++ (system libjpeg) against Python (Pillow's bundled libjpeg-turbo): both decode with
# libjpeg's default integer IDCT (JDCT_ISLOW) and the same upsampling, and measured equal to the byte here;
# another libjpeg build may round an IDCT sample differently by 1, and a CMYK pixel mixes two samples (c and k,
# each with a weight of at most 1), hence at most 2 per channel, and the mean far below. The conversion mistakes
# this guards against (no inversion, Pillow's old 255 - min(255, c + k), RGB read as CMYK) are off by tens.
JPEG_MAX_DIFF, JPEG_MEAN_DIFF = 2, 0.05


@pytest.mark.parametrize("kind", ["cmyk (Adobe marker)", "cmyk without the Adobe marker", "ycck", "ycbcr", "gray"])
def test_jpeg_pixels_as_python(read_image_exe, tmp_path, kind):
    """CMYK JPEGs (mp_infer refused them: "Unsupported color conversion request") are read as Pillow reads
    them (samples Adobe-inverted whatever the marker says, then Pillow's cmyk2rgb), YCCK ones too (libjpeg to
    CMYK first), and the ordinary YCbCr and gray ones stay equal to Python's read_rgb. The CMYK pictures have
    ink in all four channels, black from none to full."""
    img, path = _test_picture(), tmp_path / "in.jpg"
    if kind.startswith("cmyk"):
        _cmyk_picture().save(path, "JPEG", quality=90)
        if kind == "cmyk without the Adobe marker":
            path.write_bytes(_without_adobe_marker(path.read_bytes()))
            assert b"Adobe" not in path.read_bytes()
        assert Image.open(path).mode == "CMYK"
    elif kind == "ycck":
        src, exe = tmp_path / "ycck.c", tmp_path / "ycck"
        src.write_text(YCCK_WRITER)
        subprocess.run([_compiler(), str(src), "-o", str(exe), "-ljpeg"], check=True, capture_output=True,
                       timeout=HANG_GUARD)  # libjpeg-dev: what the C++ build links too
        # the samples Adobe-inverted, as Pillow's own writer stores CMYK ("CMYK;I")
        (tmp_path / "in.raw").write_bytes((255 - np.asarray(_cmyk_picture())).tobytes())
        subprocess.run([str(exe), str(tmp_path / "in.raw"), str(img.shape[1]), str(img.shape[0]), str(path)],
                       check=True, timeout=HANG_GUARD)
        assert Image.open(path).mode == "CMYK" and Image.open(path).info.get("adobe_transform") == 2
    elif kind == "ycbcr":
        Image.fromarray(img).save(path, "JPEG", quality=90)
    else:
        Image.fromarray(img).convert("L").save(path, "JPEG", quality=90)
    python = read_rgb(path).astype(int)
    cpp = _cpp_pixels(read_image_exe, path, tmp_path).astype(int)
    assert cpp.shape == python.shape == img.shape
    diff = np.abs(cpp - python)
    assert diff.max() <= JPEG_MAX_DIFF and diff.mean() <= JPEG_MEAN_DIFF, (diff.max(), diff.mean())
    if kind in ("cmyk (Adobe marker)", "ycck"):  # and near what the CMYK picture shows (the coder is lossy)
        assert np.abs(cpp - np.asarray(_cmyk_picture().convert("RGB"), int)).mean() < 8


def _png(samples: np.ndarray, color_type: int, bit_depth: int, interlace: bool = False, palette=None,
         trns: bytes | None = None) -> bytes:
    """A PNG of raw samples (h, w, channels) at any color type and bit depth, optionally Adam7-interlaced
    (Pillow writes neither interlaced files nor 16-bit gray with alpha)."""
    def rows(sub):
        out = b""
        for row in sub:
            flat = row.reshape(-1)
            if bit_depth == 16:
                data = flat.astype(">u2").tobytes()
            elif bit_depth == 8:
                data = flat.astype(np.uint8).tobytes()
            else:
                bits = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1)[:, 8 - bit_depth:]
                data = np.packbits(bits.reshape(-1)).tobytes()
            out += b"\x00" + data  # filter type 0
        return out

    if interlace:  # Adam7: (x0, y0, dx, dy) of the seven passes; an empty pass has no bytes at all
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(rows(samples[y0::dy, x0::dx]) for x0, y0, dx, dy in passes if samples[y0::dy, x0::dx].size)
    else:
        raw = rows(samples)
    h, w = samples.shape[:2]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                                                int(interlace)))
            + (chunk(b"PLTE", palette) if palette is not None else b"") + (chunk(b"tRNS", trns) if trns else b"")
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PNG_CASES = {  # name: (color type, bit depth, channels, interlaced, tRNS)
    "gray 1-bit": (0, 1, 1, False, None), "gray 2-bit": (0, 2, 1, False, None), "gray 4-bit": (0, 4, 1, False, None),
    "gray 8-bit": (0, 8, 1, False, None), "gray 8-bit with tRNS": (0, 8, 1, False, b"\x00\x07"),
    "gray 16-bit": (0, 16, 1, False, None), "gray 16-bit interlaced": (0, 16, 1, True, None),
    "gray 16-bit with tRNS": (0, 16, 1, False, b"\x01\x00"),
    "gray+alpha 8-bit": (4, 8, 2, False, None), "gray+alpha 16-bit": (4, 16, 2, False, None),
    "rgb 8-bit interlaced": (2, 8, 3, True, None), "rgb 16-bit": (2, 16, 3, False, None),
    "rgba 8-bit": (6, 8, 4, False, None), "rgba 16-bit interlaced": (6, 16, 4, True, None),
    "palette 2-bit with tRNS": (3, 2, 1, False, b"\x00\x80"), "palette 8-bit": (3, 8, 1, False, None),
}


@pytest.mark.parametrize("case", list(PNG_CASES))
def test_png_pixels_as_python(read_image_exe, tmp_path, case):
    """Every PNG color type and bit depth read to the same RGB bytes as Python's read_rgb (lossless: exact).
    16-bit gray is Pillow's mode I;16, which Python divides by 257 and rounds: C++ took the high byte (v >> 8),
    a quarter of all values one lower; other 16-bit data goes to its high byte in both."""
    color_type, depth, channels, interlace, trns = PNG_CASES[case]
    rng = np.random.default_rng(len(case))
    h, w = 37, 45  # odd sizes: partial Adam7 blocks, partial bytes of packed rows
    samples = rng.integers(0, 1 << depth, (h, w, channels))
    if depth == 16:  # the values where dividing and shifting disagree, and both ends
        special = np.array([0, 128, 129, 255, 256, 385, 386, 65279, 65407, 65408, 65535])
        samples.reshape(-1)[:special.size] = special
    palette = rng.integers(0, 256, 3 * (1 << depth), dtype=np.uint8).tobytes() if color_type == 3 else None
    path = tmp_path / "in.png"
    path.write_bytes(_png(samples, color_type, depth, interlace, palette, trns))
    python = read_rgb(path)
    cpp = _cpp_pixels(read_image_exe, path, tmp_path)
    assert cpp.shape == python.shape == (h, w, 3)
    bad = np.argwhere((cpp != python).any(-1))
    assert bad.size == 0, f"{len(bad)} pixels differ, first at {bad[0]}: C++ {cpp[tuple(bad[0])]}, " \
                          f"Python {python[tuple(bad[0])]}"


def _tiff(orientation: int | None, big_endian: bool = False) -> bytes:
    """A TIFF block (EXIF's layout) whose IFD0 holds Orientation (SHORT) or, for None, only another tag."""
    e = ">" if big_endian else "<"
    tag = (0x0112, 3, 1, orientation, 0) if orientation is not None else (0x010F, 2, 4, 0x6163, 0x656D)  # Make
    return (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(f"{e}IH", 8, 1) + \
        struct.pack(f"{e}HHIHH", *tag) + b"\0\0\0\0"


def _xmp(orientation: int, element: bool = False) -> bytes:
    body = f"<tiff:Orientation>{orientation}</tiff:Orientation>" if element else f'tiff:Orientation="{orientation}"'
    return f'<x:xmpmeta><rdf:Description {body}/></x:xmpmeta>'.encode()


def _png_with(rgb: np.ndarray, before: bytes = b"", after: bytes = b"") -> bytes:
    """An RGB PNG with extra chunks before and after its image data."""
    png = _png(rgb, 2, 8)
    idat = png.index(b"IDAT") - 4
    iend = png.index(b"IEND") - 4
    return png[:idat] + before + png[idat:iend] + after + png[iend:]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_profile(exif: bytes) -> bytes:  # ImageMagick's hex dump, as Pillow parses it
    return b"\nexif\n%8d\n" % len(exif) + b"\n".join(exif.hex().encode()[i:i + 72] for i in range(0, 2 * len(exif), 72))


ORIENTED = {  # name: (how the file says it, the orientation Pillow applies)
    **{f"jpeg exif {o}": ("jpeg exif", o) for o in range(1, 9)},
    "jpeg exif big-endian 6": ("jpeg exif be", 6),
    "jpeg xmp 8": ("jpeg xmp", 8),
    "jpeg exif without the tag, xmp 5": ("jpeg exif none + xmp", 5),
    "jpeg exif 1 wins over xmp 6": ("jpeg exif 1 + xmp", 1),
    "jpeg junk exif": ("jpeg junk", 1),
    "png eXIf 6 before the image": ("png exif before", 6),
    "png eXIf 3 after the image": ("png exif after", 3),
    "png xmp iTXt 7": ("png xmp itxt", 7),
    "png xmp tEXt element 2 after the image": ("png xmp text after", 2),
    "png raw profile zTXt 8": ("png raw profile", 8),
    "png orientation 9 (not one)": ("png exif before 9", 1),
}


@pytest.mark.parametrize("case", list(ORIENTED))
def test_orientation_as_python(read_image_exe, tmp_path, case):
    """EXIF orientation applied where Pillow finds it (Python's read_rgb transposes with exif_transpose; C++
    ignored it, so a phone's upright JPEG came out on its side): JPEG EXIF and XMP segments, PNG eXIf chunks
    (before or after the image data), XMP text chunks and ImageMagick's raw profile; EXIF's tag before XMP's;
    junk and values out of 1..8 leave the image as stored. Pixels as Python's, exactly for PNG."""
    how, orientation = ORIENTED[case]
    img = _test_picture(40, 56, seed=7)
    path = tmp_path / ("in.jpg" if how.startswith("jpeg") else "in.png")
    if how.startswith("jpeg"):
        extra = {"jpeg exif": {"exif": b"Exif\0\0" + _tiff(orientation)},
                 "jpeg exif be": {"exif": b"Exif\0\0" + _tiff(orientation, big_endian=True)},
                 "jpeg xmp": {"xmp": _xmp(orientation)},
                 "jpeg exif none + xmp": {"exif": b"Exif\0\0" + _tiff(None), "xmp": _xmp(orientation)},
                 "jpeg exif 1 + xmp": {"exif": b"Exif\0\0" + _tiff(1), "xmp": _xmp(6)},
                 "jpeg junk": {"exif": b"Exif\0\0garbage, not TIFF"}}[how]
        Image.fromarray(img).save(path, "JPEG", quality=95, **extra)
    else:
        itxt = b"XML:com.adobe.xmp\0\0\0\0\0"
        before, after = {
            "png exif before": (_chunk(b"eXIf", _tiff(orientation)), b""),
            "png exif after": (b"", _chunk(b"eXIf", _tiff(orientation))),
            "png xmp itxt": (_chunk(b"iTXt", itxt + _xmp(orientation)), b""),
            "png xmp text after": (b"", _chunk(b"tEXt", b"XML:com.adobe.xmp\0" + _xmp(orientation, element=True))),
            "png raw profile": (_chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(
                _raw_profile(b"Exif\0\0" + _tiff(orientation)))), b""),
            "png exif before 9": (_chunk(b"eXIf", _tiff(9)), b""),
        }[how]
        path.write_bytes(_png_with(img, before, after))
    python = read_rgb(path).astype(int)
    cpp = _cpp_pixels(read_image_exe, path, tmp_path).astype(int)
    assert python.shape == ((56, 40, 3) if orientation >= 5 else (40, 56, 3))  # the case does what it says
    assert cpp.shape == python.shape
    diff = np.abs(cpp - python)
    if how.startswith("jpeg"):
        assert diff.max() <= JPEG_MAX_DIFF and diff.mean() <= JPEG_MEAN_DIFF, (diff.max(), diff.mean())
    else:
        assert diff.max() == 0


# ---------------------------------------------------------------- sizes a file declares

def _declared_png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def _small_jpeg(tmp_path: Path) -> bytes:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "small.jpg")
    return (tmp_path / "small.jpg").read_bytes()


@pytest.mark.parametrize("case, message", [
    # at the cap exactly (32 * 1048576 = MAX_PIXELS) in 69 bytes: it cannot hold the pixels even at deflate's
    # 1032:1, refused before the 100 MB buffer exists (libpng's 1000000-row limit refused it with "Invalid IHDR
    # data" before, and a real image of this size too, which Python reads: next test)
    ("png 32x1048576 in 69 bytes", "truncated (69 bytes cannot hold 32x1048576 pixels)"),
    ("png 1048576x32 in 69 bytes", "truncated (69 bytes cannot hold 1048576x32 pixels)"),
    # beyond the cap: the cap's message, from the header (libpng's side limit spoke first before)
    ("png 1048576x1048576", f"is 1048576x1048576: 1099511627776 pixels, more than the {MAX_PIXELS}"),
    ("png 2147483647x2147483647", f"is 2147483647x2147483647: 4611686014132420609 pixels, more than the {MAX_PIXELS}"),
    # under the cap in a 691-byte JPEG: decoding stops at libjpeg's first warning, rows were allocated as decoded
    ("jpeg 512x65500 in 691 bytes", "premature end of data segment"),
    ("jpeg 65500x65500", f"is 65500x65500: 4290250000 pixels, more than the {MAX_PIXELS}"),
])
def test_declared_sizes(mp_infer, depth_pt2, tmp_path, case, message):
    """Sizes declared in a tiny file are refused with one line and without the pixel buffer they declare: the
    peak memory stays within 50 MB of a run refused before any image (the smallest of these buffers is 100 MB)."""
    kind, size = case.split()[:2]
    width, height = map(int, size.split("x"))
    image = tmp_path / f"big.{kind}"
    image.write_bytes(_declared_png(width, height) if kind == "png" else
                      jpeg_with_size(_small_jpeg(tmp_path), width, height))
    rc, stderr, rss = _peak_rss(mp_infer, "--engine", depth_pt2, "--input", image, "--npy", tmp_path / "x.npy")
    assert rc == 1 and stderr.count("\n") == 1 and message in stderr, stderr
    _, _, baseline = _peak_rss(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "absent.png", "--npy",
                               tmp_path / "x.npy")
    assert rss - baseline < 50 * 1024, f"{rss} KB resident, {baseline} KB without the image"
    if kind == "png" or width * height > MAX_PIXELS:
        assert _python_verdict(image) is not None  # Python refuses these too
    # (the truncated 512x65500 JPEG, Python's read_rgb accepts: Pillow pads the missing data with gray)


def test_tall_png_read_as_python(read_image_exe, tmp_path):
    """A real 32x1048576 PNG (at the cap, 99 KB) is read by both sides: libpng's default limit of 1000000 rows
    refused it in C++ alone."""
    path = tmp_path / "tall.png"
    path.write_bytes(black_png(32, 1048576))
    assert _python_verdict(path) is None
    r = _run(read_image_exe, path, tmp_path / "tall.ppm")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tall.ppm").read_bytes()[:16] == b"P6\n32 1048576\n25"


@pytest.mark.parametrize("field, value", [
    ("extra_files bytes", 2 ** 63),  # wrapped to a negative int64, which meant "size unchecked"
    ("extra_files bytes", 2 ** 64 - 1),
    ("file_bytes", 2 ** 64 - 1),
    ("file_bytes", 2 ** 64 + 7),  # past uint64: nlohmann reads a float (not an integer)
])
def test_byte_counts_bounded(mp_infer, depth_pt2, tmp_path, field, value):
    """Byte counts from the sidecar are compared with the file's size whatever their magnitude: an extra file of
    the right checksum whose recorded size is 2**63 was accepted (the size check skipped). Python's read_sidecar
    refuses each as well."""
    pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    extra = tmp_path / "extra.bin"
    extra.write_bytes(b"external data")
    if field == "file_bytes":
        edit_meta(pt2, lambda meta: meta.update(file_bytes=value))
    else:
        edit_meta(pt2, lambda meta: meta.update(extra_files=[{"name": extra.name, "sha256": sha256_file(extra),
                                                              "bytes": value}]))
    with pytest.raises(ArtifactError):
        read_sidecar(pt2, check_machine=False)
    _image(tmp_path / "in.png", SIZE, SIZE)
    r = _run(mp_infer, "--engine", pt2, "--input", tmp_path / "in.png", "--npy", tmp_path / "depth.npy")
    _one_error(r, "must be an integer" if value >= 2 ** 64 else f"sidecar says {value}")
    assert not (tmp_path / "depth.npy").exists()


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


JSON_TEXTS = {  # name: (the sidecar's text from the valid one's, where the depth check is, accepted?)
    # the sidecar object and its "source" object are 2 levels: 62 arrays more make 64, Python's MAX_JSON_DEPTH
    "nested 64 deep": (lambda t: t.replace('"source": {', f'"source": {{"deep": {_nested(62)}, ', 1), True),
    "nested 65 deep": (lambda t: t.replace('"source": {', f'"source": {{"deep": {_nested(63)}, ', 1), False),
    # (integers of 310 to 4300 digits, and floats past 1.8e308, Python takes and nlohmann cannot: "number
    # overflow", refused by C++ alone; no sidecar mp-deploy writes holds one)
    "a 300-digit integer": (lambda t: t.replace('"source": {', '"source": {"n": ' + "7" * 300 + ", ", 1), True),
    "a 4301-digit integer": (lambda t: t.replace('"source": {', '"source": {"n": ' + "7" * 4301 + ", ", 1), False),
    "a 5000-digit fraction": (lambda t: t.replace('"source": {', '"source": {"x": 0.' + "7" * 5000 + ", ", 1), True),
    "brackets inside a string": (lambda t: t.replace('"source": {', f'"source": {{"s": "{_nested(70)}", ', 1), True),
    "a byte order mark": (lambda t: "\ufeff" + t, False),
}


@pytest.mark.parametrize("case", list(JSON_TEXTS) + ["contract nested 65 deep"])
def test_sidecar_json_limits_as_python(mp_infer, depth_pt2, tmp_path, case):
    """The JSON documents Python's parse_json refuses and nlohmann's parser took (C++ read a sidecar nested
    400000 deep, or with a 5000-digit integer, that Python refuses): nesting past MAX_JSON_DEPTH (64), an integer
    past Python's 4300 digits, a byte order mark; in the sidecar and in the contract inside the package. Each
    verdict is Python's read_sidecar's, a refusal one line saying why."""
    pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    if case == "contract nested 65 deep":
        text = json.dumps(contract_of(read_meta(pt2)))
        rewrite_contract(pt2, text.replace('"plugins": []', f'"plugins": [{_nested(64)}]', 1))
        accepted, words = False, f"the contract inside {pt2}: JSON nested deeper than 64 levels"
    else:
        edit, accepted = JSON_TEXTS[case]
        sidecar_path(pt2).write_text(edit(sidecar_path(pt2).read_text()), encoding="utf-8")
        words = {"nested 65 deep": "JSON nested deeper than 64 levels",
                 "a 4301-digit integer": "an integer of 4301 digits",
                 "a byte order mark": "byte order mark"}.get(case)
    try:
        read_sidecar(pt2, check_machine=False)
        python = True
    except ArtifactError:
        python = False
    assert python == accepted
    _image(tmp_path / "in.png", SIZE, SIZE)
    r = _run(mp_infer, "--engine", pt2, "--input", tmp_path / "in.png", "--npy", tmp_path / "depth.npy")
    if accepted:
        assert r.returncode == 0, r.stderr
    else:
        _one_error(r, words)


# ---------------------------------------------------------------- fuzz

FUZZ_SEED = int(os.environ.get("MP_FUZZ_SEED", "13"))
FUZZ_CASES = int(os.environ.get("MP_FUZZ_CASES", "24"))  # about 1 s each, two at a time
ROLES = ["--output", "--raw", "--npy", "input", "engine", "sidecar"]  # the order mp_infer checks them in
KINDS = ["fifo", "fifo with a writer", "folder", "symbolic link loop", "dangling link", "link to a fifo",
         "link to a folder", "socket", "link to a regular file", "regular file"]


def _expected(role: str, kind: str, path: Path) -> str | None:
    """The message mp_infer gives for `kind` in `role` at `path`, None where it is fine."""
    if role.startswith("--"):  # an output: only nothing or a regular file may be there
        if kind == "regular file":
            return None
        named = {"fifo": "a FIFO", "fifo with a writer": "a FIFO", "folder": "a folder", "socket": "a socket"}
        return f"{role} {path}: {named.get(kind, 'a symbolic link')} is there; refusing to replace"
    if kind in ("regular file", "link to a regular file"):
        return None
    what = {"input": "cannot read image", "engine": "artifact", "sidecar": "sidecar"}[role]
    if kind == "dangling link":
        return {"input": f"cannot read image {path}: No such file or directory",
                "engine": f"artifact not found: {path}", "sidecar": "has no sidecar"}[role]
    named = {"fifo": "a FIFO", "fifo with a writer": "a FIFO", "link to a fifo": "a FIFO", "folder": "a folder",
             "link to a folder": "a folder", "socket": "a socket", "symbolic link loop": "a symbolic link loop"}
    return f"{what} {path}: not a regular file ({named[kind]})"


def _make(kind: str, path: Path, real: Path, keep: list) -> None:
    """`kind` at `path`; `real` is a regular file of the right content for the links and files that are fine."""
    if kind in ("fifo", "fifo with a writer", "folder", "symbolic link loop", "link to a fifo", "socket"):
        _special_input(kind, path, keep)
    elif kind == "dangling link":
        os.symlink("nowhere", path)
    elif kind == "link to a folder":
        (path.parent / (path.name + ".dir")).mkdir()
        os.symlink(path.name + ".dir", path)
    elif kind == "link to a regular file":
        os.symlink(os.path.relpath(real, path.parent), path)
    else:  # a regular file: a copy of the real one (an output's is "a link's target", replaced by a good run)
        path.write_bytes(real.read_bytes())


def test_fuzz_special_files(mp_infer, depth_pt2, tmp_path):
    """Seeded random cases, each putting one or two special files (FIFO, FIFO with a writer, folder, link loop,
    dangling link, link to a FIFO or folder, socket) or fine ones (a regular file, a link to one) in the roles
    of input, engine, sidecar and the three outputs. Every run ends promptly (the timeout is the hang guard)
    in exit 0 when every role is fine, else exit 1 with the one line of the first role mp_infer checks;
    afterwards each special file is still what it was, and no temporary is left. MP_FUZZ_SEED / MP_FUZZ_CASES
    change the seed and the number of cases."""
    rng = random.Random(FUZZ_SEED)
    store = tmp_path / "store"  # the regular files that links point to
    store.mkdir()
    _image(store / "in.png", SIZE, SIZE)
    real_pt2 = copy_artifact(depth_pt2, store, "model.pt2")
    cases = []
    for i in range(FUZZ_CASES):
        folder = tmp_path / f"c{i}"
        (folder / "out").mkdir(parents=True)
        roles = rng.sample(ROLES, rng.choice([1, 2]))
        paths = {"input": folder / "in.png", "engine": folder / "model.pt2", "sidecar": folder / "model.pt2.json",
                 "--output": folder / "out" / "vis.png", "--raw": folder / "out" / "raw.png",
                 "--npy": folder / "out" / "depth.npy"}
        reals = {"input": store / "in.png", "engine": real_pt2, "sidecar": sidecar_path(real_pt2)}
        for role in ("--output", "--raw", "--npy"):  # what an output link points to
            reals[role] = folder / "out" / (paths[role].name + ".target")
            reals[role].write_text("a link's target")
        picked = {role: rng.choice(KINDS) for role in roles}
        keep = []
        for role in ("input", "engine", "sidecar"):  # the fine ones first: hard links to the store
            if role not in picked:
                os.link(reals[role], paths[role])
        for role, kind in picked.items():
            _make(kind, paths[role], reals[role], keep)
        before = {role: _what(paths[role]) for role in picked}
        before["names in out"] = sorted(p.name for p in (folder / "out").iterdir())
        expected = next((m for role in ROLES if role in picked
                         for m in [_expected(role, picked[role], paths[role])] if m), None)
        cases.append((folder, paths, picked, keep, before, expected))
    if FUZZ_CASES >= 10:  # the seed draws both verdicts (a fuzz of refusals alone would not see a broken success)
        assert {c[5] is None for c in cases} == {True, False}

    def run(case):
        paths = case[1]
        return _run(mp_infer, "--engine", paths["engine"], "--input", paths["input"], "--output", paths["--output"],
                    "--raw", paths["--raw"], "--npy", paths["--npy"])

    try:
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(run, cases))
    finally:
        for case in cases:
            for k in case[3]:
                k.close() if isinstance(k, socket.socket) else os.close(k)
    failures = []
    for i, ((folder, paths, picked, _, before, expected), r) in enumerate(zip(cases, runs)):
        problems = []
        if expected is None and r.returncode != 0:
            problems.append(f"refused: {r.stderr.strip()}")
        if expected is not None:
            lines = r.stderr.splitlines()
            if r.returncode != 1 or len(lines) != 1 or not lines[0].startswith("mp_infer: error: "):
                problems.append(f"exit {r.returncode}, stderr {r.stderr!r:.300}")
            elif expected not in lines[0]:
                problems.append(f"said {lines[0]!r}, expected {expected!r}")
        names_before = before.pop("names in out")
        for role, what in before.items():
            if role.startswith("--") and picked[role] == "regular file":
                continue  # replaced by a successful run, as it should be
            if _what(paths[role]) != what:
                problems.append(f"{role} ({picked[role]}) changed")
        left = _temporaries(folder / "out") + _temporaries(folder)
        if left:
            problems.append(f"temporaries left: {left}")
        after = sorted(p.name for p in (folder / "out").iterdir())
        if expected is not None and after != names_before:
            problems.append(f"a refused run changed the outputs: {names_before} -> {after}")
        if problems:
            failures.append(f"case {i} {picked}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
