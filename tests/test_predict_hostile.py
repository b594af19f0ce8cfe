"""mp-deploy predict against hostile inputs: special files among the inputs and in the way of outputs, sizes whose
protocol work is out of bounds, overlapping input and output trees, long names, a resume that cannot verify
its outputs, NaN pixels, bad boxes and environment values; then a seeded, bounded fuzz of each class.

Cases that would hang on a regression (a FIFO opened for reading blocks until a writer comes) run predict in a
subprocess with a timeout, so that a hang fails the test instead of stopping the suite.
"""
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mp_deploy import cli, tasks
from mp_deploy.errors import DataError, MpDeployError, UsageError
from mp_deploy.files import NotRegularFileError, atomic_write, check_replaceable, parse_json, read_json
from mp_deploy.images import MAX_PIXELS, image_size, read_rgb
from mp_deploy.prediction.inputs import check_apart, list_inputs, parse_shard
from mp_deploy.prediction.job import write_manifest
from mp_deploy.prediction.pipeline import _cause
from mp_deploy.prediction.predictor import read_boxes

HANG_GUARD_S = 240  # a subprocess predict of two small images takes ~15 s here; a hang would take forever


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's: one torch thread per test, restored after


def _png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["predict", "--no-progress", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _subprocess_predict(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mp_deploy.cli", "predict", "--no-progress", *map(str, argv)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------ special files among the inputs

def test_special_files_in_the_input_are_skipped_without_blocking(tmp_path):
    # a FIFO named like an image and one named like a video (each blocked the run forever: open() waits for a
    # writer, FFmpeg's frame count too), a socket, a broken link and a link loop: each skipped with its kind,
    # the regular image beside them predicted
    src, out = tmp_path / "in", tmp_path / "out"
    _png(src / "a.png", 64, 80)
    os.mkfifo(src / "fifo.png"), os.mkfifo(src / "clip.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.jpg"))
    os.symlink(src / "gone.png", src / "broken.png")
    os.symlink(src / "loop.png", src / "loop.png")  # a link to itself
    try:
        r = _subprocess_predict("--task", "depth", "--input", src, "--output", out, "--tta", "off")
    finally:
        sock.close()
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("skipped"))
    for name, kind in [("fifo.png", "a FIFO"), ("clip.mp4", "a FIFO"), ("sock.jpg", "a socket"),
                       ("broken.png", "a broken symbolic link"), ("loop.png", "a symbolic link loop")]:
        assert f"{src / name} ({kind})" in line
    assert line.startswith("skipped 5 inputs that are not regular files")
    assert (out / "a.depth.png").is_file() and not (out / "fifo.depth.png").exists()
    assert stat.S_ISFIFO(os.stat(src / "fifo.png").st_mode)  # left as it was


def test_a_fifo_as_the_input_is_refused_at_once(tmp_path):
    # the single-input path: refused before anything is loaded, in one line, exit 2
    os.mkfifo(tmp_path / "x.png")
    r = _subprocess_predict("--task", "depth", "--input", tmp_path / "x.png", "--output", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.strip().endswith("not a regular file or a folder (a FIFO)")
    assert len(r.stderr.strip().splitlines()) == 1


def _raised_without_blocking(read, fifo: Path) -> BaseException | None:
    """What read(fifo) raised, run in a thread: a reader blocked in open() is released by opening the FIFO's
    write end, and the test fails instead of hanging."""
    caught = []

    def target():
        try:
            read(fifo)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            caught.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S / 4)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer comes and goes: the reader sees EOF
        thread.join(HANG_GUARD_S / 4)
        pytest.fail(f"{read.__name__} blocked on a FIFO")
    return caught[0] if caught else None


def test_readers_refuse_special_files_without_blocking(tmp_path):
    # the library readers themselves: a FIFO opened for reading would block until a writer comes
    os.mkfifo(tmp_path / "f.png")
    for read in (read_rgb, image_size, read_json):
        e = _raised_without_blocking(read, tmp_path / "f.png")
        assert isinstance(e, NotRegularFileError) and str(e).endswith("not a regular file (a FIFO)"), e
    with pytest.raises(NotRegularFileError, match="a folder"):
        read_rgb(tmp_path)


# ------------------------------------------------------------------ special files where outputs go

def test_outputs_never_replace_what_is_not_a_regular_file(tmp_path, capsys):
    # as root, a rename onto a device node replaces it; here a FIFO, a folder and a symbolic link stand where
    # a.png's outputs go: the input fails naming each, and each is still what it was
    src, out = tmp_path / "in", tmp_path / "out"
    _png(src / "a.png", 64, 64)
    out.mkdir()
    os.mkfifo(out / "a.depth.png")
    (tmp_path / "elsewhere.png").write_bytes(b"keep me")
    os.symlink(tmp_path / "elsewhere.png", out / "a.depth16.png")
    (out / "a.depth.npy").mkdir()
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", out, "--tta", "off")
    assert code == 11 and "a FIFO is there; refusing to replace" in err
    assert stat.S_ISFIFO(os.lstat(out / "a.depth.png").st_mode) and (out / "a.depth.npy").is_dir()
    assert os.path.islink(out / "a.depth16.png") and (tmp_path / "elsewhere.png").read_bytes() == b"keep me"
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]  # no temporary left behind


def test_atomic_write_refuses_and_leaves_nothing(tmp_path):
    # the rule itself, for every writer (checkpoints, sidecars, manifests, outputs)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    for name in ("fifo", "folder", "link"):
        with pytest.raises(NotRegularFileError, match="refusing to replace"):
            atomic_write(tmp_path / name, lambda tmp: Path(tmp).write_text("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link"]
    assert check_replaceable(tmp_path / "new") == tmp_path / "new"


def test_temporary_names_fit_where_the_final_name_fits(tmp_path):
    # a legal 255-byte name: the hidden temporary beside it used to be longer than a name may be
    name = "n" * 251 + ".png"
    atomic_write(tmp_path / name, lambda tmp: Path(tmp).write_bytes(b"ok"))
    assert (tmp_path / name).read_bytes() == b"ok" and len(os.listdir(tmp_path)) == 1


def test_a_long_input_name_gets_all_its_outputs(tmp_path, capsys):
    # 240 characters + '.png': its longest output name (+ '.depth16.png') is 252 bytes, legal
    src = tmp_path / "in"
    _png(src / ("x" * 240 + ".png"), 64, 64)
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", tmp_path / "out", "--tta", "off")
    assert code == 0, err
    assert len(list((tmp_path / "out").iterdir())) == 4  # 3 outputs + predict.json


# ------------------------------------------------------------------ overlapping trees

@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_input_and_output_trees_never_overlap(tmp_path, capsys, where):
    # same: each rerun read the previous outputs as inputs (4, 12, 28 inputs); inside: that subfolder's
    # images were silently left out; around: the input inside the output folder
    src = tmp_path / "in"
    _png(src / "a.png", 64, 64)
    out = {"same": src, "inside": src / "out", "around": tmp_path}[where]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "inside" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created
    with pytest.raises(UsageError):
        check_apart(src / "a.png", src)  # a single input inside the output folder


# ------------------------------------------------------------------ resume

def test_resume_refuses_outputs_it_cannot_verify(tmp_path, capsys):
    # with predict.json gone, --resume with another --tta kept the old outputs and wrote a manifest that
    # misdescribed them; a corrupt one was reported as "other settings"; a folder in its place crashed
    src, out = tmp_path / "in", tmp_path / "out"
    _png(src / "a.png", 64, 64)
    assert _main(capsys, "--task", "depth", "--input", src, "--output", out, "--tta", "off")[0] == 0
    (out / "predict.json").unlink()
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", out, "--resume", "--tta", "on")
    assert code == 2 and "predict.json is missing (1 inputs' outputs are complete there)" in err
    assert not (out / "predict.json").exists()
    (out / "predict.json").write_text("{ not json")
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", out, "--resume")
    assert code == 2 and "predict.json cannot be used" in err and "not valid JSON" in err
    (out / "predict.json").unlink()
    (out / "predict.json").mkdir()
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", out)  # without --resume too
    assert code == 2 and "a folder is there; refusing to replace" in err and len(err.strip().splitlines()) == 1


def test_resume_into_an_empty_folder_starts_fresh(tmp_path):
    # nothing to verify: --resume on a new folder is a first run
    write_manifest(tmp_path, {"task": "depth"}, resume=True, kept=0)
    assert json.loads((tmp_path / "predict.json").read_text()) == {"task": "depth"}


# ------------------------------------------------------------------ sizes and pixels

def test_work_is_bounded_before_decoding(tmp_path, capsys, monkeypatch):
    # a 529-byte 32x4096 PNG asked for 256 depth windows (39 s); a 32x1048576 one (exactly the pixel cap) for a
    # 537-megapixel resize (6.4 GB): both refused from their headers (never decoded), the normal image beside
    # them predicted
    from mp_deploy.prediction import pipeline

    decoded = []
    monkeypatch.setattr(pipeline, "read_image", lambda path: decoded.append(path.name) or read_rgb(path))
    src = tmp_path / "in"
    _png(src / "ok.png", 64, 64)
    Image.new("RGB", (4096, 32)).save(src / "wide.png")
    Image.new("L", (1 << 20, 32)).save(src / "huge.png")
    assert (src / "huge.png").stat().st_size < 200_000 and 32 * (1 << 20) == MAX_PIXELS
    code, _, err = _main(capsys, "--task", "depth", "--input", src, "--output", tmp_path / "out")
    assert code == 12, err
    assert f"{src / 'wide.png'}: 4096x32 would take 256 network runs by the depth protocol, more than the 200" in err
    assert f"{src / 'huge.png'}: 1048576x32 would be resized to 536870912 pixels" in err
    assert (tmp_path / "out/ok.depth.png").is_file() and decoded == ["ok.png"]


def test_every_reference_protocol_fits_the_work_limits():
    # the limits must not refuse what the reference runs: each preset's data-set image size with TTA on
    sizes = {"nyu": (480, 640), "kitti": (352, 1216), "ade20k": (512, 2048), "cityscapes": (1024, 2048),
             "coco": (480, 640)}
    for name, (h, w) in sizes.items():
        preset = tasks.get_preset(name)
        spec = tasks.get(preset.task)
        protocol = spec.fit_protocol(spec.protocol_for(name), preset.window, False, "on")
        tasks.check_work(preset.task, protocol, h, w, np.zeros((100, 4)) if preset.task == "pose" else None)


def test_a_float_image_with_nan_is_refused(tmp_path):
    # a float32 TIFF in [0, 1] holding NaN / inf was read as a near-black image
    for bad in (np.nan, np.inf):
        a = np.full((40, 40), 0.5, np.float32)
        a[3, 3] = bad
        Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
        with pytest.raises(DataError, match="1 pixels are NaN or infinite"):
            read_rgb(tmp_path / "f.tif")


# ------------------------------------------------------------------ boxes, environment, full disks

@pytest.mark.parametrize("boxes, message", [
    ({"a.png": [[0, 0, 1e308, 10]]}, "numbers within"),  # 1e308 was blamed on the image
    ({"a.png": [[0, 0, 10, -1]]}, "w and h > 0"),
    ({"a.png": [[0, 0, 10, 10, 9]]}, "score in \\[0, 1\\]"),
    ({"a.png": [[0, 0, "x", 10]]}, "needs a list"),
    ({"a.png": [[0, 0, 10]]}, "needs a list"),
    ([1, 2], "expected an object"),
])
def test_bad_boxes_are_refused_up_front(boxes, message):
    with pytest.raises(UsageError, match=message):
        read_boxes(boxes)


def test_boxes_outside_the_image_fail_that_input_and_unmatched_boxes_are_named(tmp_path, capsys):
    src = tmp_path / "in"
    _png(src / "a.png", 64, 64)
    (tmp_path / "boxes.json").write_text(json.dumps({"a.png": [[500, 500, 10, 10]], "gone.png": [[0, 0, 5, 5]]}))
    code, _, err = _main(capsys, "--task", "pose", "--input", src, "--output", tmp_path / "out",
                         "--boxes", tmp_path / "boxes.json")
    assert code == 11 and "box 0 [500, 500, 10, 10] lies outside the 64x64 image" in err
    assert "--boxes: 1 entries name no input and are not used: gone.png" in err


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "-1"},
                                 {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "1" * 5000}])
def test_shard_auto_names_a_malformed_environment_variable(monkeypatch, env):
    # raw int() tracebacks before; a 5000-digit value is refused without converting it
    for name in ("WORLD_SIZE", "RANK", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="environment variable .* must be a whole number"):
        parse_shard("auto")


def test_a_full_disk_is_named_as_one():
    # numpy's short write said "cannot write (23040 requested and 2016 written)"
    assert _cause(OSError("23040 requested and 2016 written")) == "no space left on the device"
    assert _cause(OSError(28, "No space left on device")) == "no space left on the device"


# ------------------------------------------------------------------ seeded, bounded fuzz per class

FUZZ_CASES = 60


def _fuzz_png_header(rng, path: Path) -> tuple[int, int]:
    """A PNG whose IHDR declares a random size (up to 2^31 - 1 per side) and whose data is a few bytes."""
    import struct
    import zlib

    w, h = (int(rng.choice([1, 31, 32, 4096, 1 << 20, (1 << 31) - 1, rng.integers(1, 1 << 31)])) for _ in range(2))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return h, w


def test_fuzz_declared_sizes_and_special_files(tmp_path):
    # every input is refused with a typed one-line error or read; none is decoded past the cap or blocks
    rng = np.random.default_rng(23)
    spec = tasks.get("depth")
    protocol = spec.fit_protocol(spec.protocol_for("synthetic-depth"), (128, 128), False, "auto")
    for i in range(FUZZ_CASES):
        path = tmp_path / f"case{i}.png"
        kind = rng.integers(4)
        if kind == 0:
            h, w = _fuzz_png_header(rng, path)
            try:
                assert image_size(path) == (h, w)
                tasks.check_work("depth", protocol, h, w)
                read_rgb(path)
            except DataError as e:
                assert "\n" not in str(e)
        elif kind == 1:
            os.mkfifo(path)
        elif kind == 2:
            path.mkdir()
        else:
            os.symlink(tmp_path / f"case{i}.png", path)  # a loop onto itself
        if kind:
            with pytest.raises(NotRegularFileError):
                read_rgb(path)
    listing = list_inputs(tmp_path)
    assert all(what != "a regular file" for _, what in listing.special)


def test_fuzz_json_files_and_manifests(tmp_path):
    # random bytes, deep nesting, long numbers, NaN: DataError (manifest: UsageError), never a raw traceback
    rng = np.random.default_rng(7)
    pieces = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"1" * 5000, b"NaN", b"Infinity", b"\xff", b"null",
              b'"task"', b'"depth"', b" "]
    for i in range(FUZZ_CASES):
        depth = int(rng.integers(0, 200))
        body = b"".join(pieces[j] for j in rng.integers(0, len(pieces), int(rng.integers(1, 40))))
        data = b"[" * depth + body + b"]" * depth
        (tmp_path / "predict.json").write_bytes(data)
        try:
            parse_json(data, "fuzz")
        except DataError as e:
            assert "\n" not in str(e)
        try:
            write_manifest(tmp_path, {"task": "depth"}, resume=True, kept=1)
        except MpDeployError as e:
            assert isinstance(e, UsageError) and "\n" not in str(e)


def test_fuzz_boxes(tmp_path):
    # random box records: accepted only when every number is finite, bounded, w and h positive, score in [0, 1]
    rng = np.random.default_rng(11)
    values = [0, 1, -1, 0.5, 1e308, -1e308, float("nan"), float("inf"), "x", None, [], 1 << 21, (1 << 21) + 1]
    for _ in range(FUZZ_CASES):
        box = [values[j] for j in rng.integers(0, len(values), int(rng.integers(0, 7)))]
        try:
            out = read_boxes({"a.png": [box]})
        except UsageError as e:
            assert "\n" not in str(e)
            continue
        b = out["a.png"][0]
        assert np.isfinite(b).all() and (np.abs(b) <= 1 << 21).all() and (b[2:4] > 0).all() and 0 <= b[4] <= 1
