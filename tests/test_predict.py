"""mp-deploy predict end to end on the bundled demo models: images, a folder with bad files in it, a video;
eager and an exported ONNX artifact (built once per session); shards, resume, bad inputs and outputs.

torch runs on one thread here: on a busy 2-core machine its spinning OpenMP threads made a window 40x slower.
"""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mp_deploy
from mp_deploy import cli, demo
from mp_deploy.images import read_rgb
from mp_deploy.errors import DataError, UsageError
from mp_deploy.prediction import Predictor, predict_iter
from mp_deploy.prediction.inputs import list_inputs, parse_shard, shard
from mp_deploy.util import rel_l2

av = pytest.importorskip("av")

TASKS = ("depth", "seg", "pose")
DEPTH_MAX, DEPTH_SCALE = 10.0, 1000.0  # the synthetic-depth preset: metres up to 10, 16-bit PNGs in mm


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_models():
    """task -> the bundled demo model's checkpoint."""
    return {task: demo.checkpoint(task) for task in TASKS}


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, image: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three good images (RGB, grayscale, RGBA; one in a subfolder), a corrupt one, a tiny one, a text file."""
    root = tmp_path_factory.mktemp("photos")
    _save(root / "a.png", Image.fromarray(_rgb(128, 160)))
    _save(root / "sub/gray.png", Image.fromarray(_rgb(100, 128)[..., 0]))
    _save(root / "sub/rgba.png", Image.fromarray(np.dstack([_rgb(128, 128, 1), np.full((128, 128), 7, np.uint8)])))
    (root / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    _save(root / "tiny.png", Image.fromarray(_rgb(20, 128)))
    (root / "notes.txt").write_text("not an image")
    return root


def _main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["predict", "--no-progress", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def eager_run(folder, tmp_path_factory):
    """The folder through the depth demo (no model named) once, by the CLI: (exit code, stdout, stderr, out).
    One output is blocked by a folder of its name: that input's write fails, the rest goes on."""
    out = tmp_path_factory.mktemp("eager")
    (out / "sub/rgba.depth16.png").mkdir(parents=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["predict", "--no-progress", "--task", "depth", "--input", str(folder), "--output", str(out)])
    return code, stdout.getvalue(), stderr.getvalue(), out


# ------------------------------------------------------------------ reading images

def test_read_rgb_converts_modes_and_names_bad_files(tmp_path):
    gray = _save(tmp_path / "gray.png", Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64)
                                                        .astype(np.uint8)))
    rgb = read_rgb(gray)
    assert rgb.shape == (48, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    deep = _save(tmp_path / "deep.png", Image.fromarray(np.full((40, 40), 65535, np.uint16)))
    assert read_rgb(deep).max() == 255 and read_rgb(deep).dtype == np.uint8  # 16 bits scaled, not clipped
    mid = _save(tmp_path / "mid.png", Image.fromarray(np.full((40, 40), 257 * 100, np.uint16)))
    assert (read_rgb(mid) == 100).all()
    rgba = _save(tmp_path / "rgba.png", Image.fromarray(np.dstack([_rgb(40, 40), np.zeros((40, 40), np.uint8)])))
    assert np.array_equal(read_rgb(rgba), _rgb(40, 40))  # alpha dropped, colours kept
    palette = Image.fromarray(np.tile(np.arange(4, dtype=np.uint8), (40, 10)))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    assert tuple(read_rgb(_save(tmp_path / "p.png", palette))[0, 1]) == (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rotated = _save(tmp_path / "rot.jpg", Image.new("RGB", (60, 40), (200, 10, 10)), exif=exif)
    assert read_rgb(rotated).shape == (60, 40, 3)  # applied: 60 wide x 40 high is shown 40 wide x 60 high

    good = _save(tmp_path / "good.png", Image.fromarray(_rgb(64, 64)))
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    huge = _save(tmp_path / "huge.png", Image.new("L", (6000, 6000)))  # 36 M pixels, a 36 KB file
    cases = {"truncated.png": "truncated or corrupt", "text.png": "not an image file",
             "dangling.png": "no such file", "huge.png": "more than the 33554432"}
    for name, cause in cases.items():
        with pytest.raises(DataError, match=cause) as e:
            read_rgb(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)
    assert huge.stat().st_size < 1 << 20


# ------------------------------------------------------------------ inputs and shards

def test_listing_is_sorted_recursive_and_shards_cover_it_once(folder, tmp_path, monkeypatch):
    listing = list_inputs(folder)
    items, others = listing.items, listing.others
    assert [i.key for i in items] == ["a.png", "bad.jpg", "sub/gray.png", "sub/rgba.png", "tiny.png"]
    assert others == 1 and [i.index for i in items] == list(range(5))
    for n in (1, 2, 3, 7):
        parts = [shard(items, i, n) for i in range(n)]
        assert sorted(k.key for p in parts for k in p) == sorted(k.key for k in items)
        assert len({k.key for p in parts for k in p}) == len(items)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "-1/2", "a/b"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)
    monkeypatch.setenv("RANK", "2"), monkeypatch.setenv("WORLD_SIZE", "3")  # torchrun's
    assert parse_shard("auto") == (2, 3)
    (tmp_path / "a.png").touch(), (tmp_path / "a.jpg").touch()
    assert [i.stem for i in list_inputs(tmp_path).items] == ["a_jpg", "a_png"]  # same stem: no output collides


# ------------------------------------------------------------------ end to end: depth, eager and ONNX

def test_folder_end_to_end_on_the_depth_demo(eager_run, folder):
    code, out, err, dest = eager_run
    lines = err.strip().splitlines()
    assert len(lines) == 3, err  # one line per bad input: corrupt, tiny, the blocked output
    assert any(str(folder / "bad.jpg") in line and "cannot read image" in line for line in lines)
    assert any(str(folder / "tiny.png") in line and "too small" in line for line in lines)
    assert any("rgba.depth16.png" in line and "cannot write" in line for line in lines)
    assert code == 13  # 10 + 3 failed inputs
    assert "3 images" in out and "3 failed" in out and "engine" in out and "images/s" in out
    for stem, (h, w) in {"a": (128, 160), "sub/gray": (100, 128), "sub/rgba": (128, 128)}.items():
        depth = np.load(dest / f"{stem}.depth.npy")
        assert depth.shape == (h, w) and depth.dtype == np.float32 and np.isfinite(depth).all()
        assert 0 < depth.min() and depth.max() <= DEPTH_MAX
        color = np.asarray(Image.open(dest / f"{stem}.depth.png"))
        assert color.shape == (h, w, 3) and color.dtype == np.uint8
        if stem != "sub/rgba":
            png16 = np.asarray(Image.open(dest / f"{stem}.depth16.png"))
            assert png16.dtype == np.uint16 and np.abs(png16 / DEPTH_SCALE - depth).max() <= 0.5 / DEPTH_SCALE + 1e-6
    assert not list(dest.glob("bad*")) and not list(dest.glob("tiny*"))
    assert not [p for p in dest.rglob(".*")]  # no temporary left behind
    assert json.loads((dest / "predict.json").read_text())["preset"] == "synthetic-depth"


def test_exported_artifact_equals_eager(eager_run, depth_onnx, folder, tmp_path, capsys):
    _, _, _, eager = eager_run
    # the folder holding the artifact: --backend auto picks it
    code, out, err = _main(capsys, "--input", folder, "--output", tmp_path, "--engine", depth_onnx.parent,
                           "--outputs", "npy")
    assert code == 12 and "depth-synthetic-depth-tiny-fp32.onnx" in out, err  # the two bad images
    for stem in ("a", "sub/gray", "sub/rgba"):
        onnx = np.load(tmp_path / f"{stem}.depth.npy")
        assert rel_l2(onnx, np.load(eager / f"{stem}.depth.npy")) <= 1e-4  # the fp32 parity rule
    assert sorted(p.name for p in tmp_path.rglob("*.npy")) == ["a.depth.npy", "gray.depth.npy", "rgba.depth.npy"]
    code, _, err = _main(capsys, "--input", folder, "--output", tmp_path, "--engine", depth_onnx, "--batch-size", 8)
    assert code == 2 and "takes at most 4" in err


def test_python_api_returns_arrays(eager_run, folder):
    _, _, _, eager = eager_run
    rgb = np.asarray(Image.open(folder / "a.png"))
    depth = mp_deploy.predict(rgb, task="depth")["depth"]
    assert depth.shape == (128, 160) and rel_l2(depth, np.load(eager / "a.depth.npy")) <= 1e-6
    predictor = Predictor(task="depth", tta="off")
    stream = list(predictor.stream([rgb[:, :128], np.zeros((8, 8, 3), np.uint8)]))
    assert stream[0]["depth"].shape == (128, 128) and "too small" in stream[1]["error"]


# ------------------------------------------------------------------ shards and resume

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    for k in range(3):
        _save(root / f"img{k}.png", Image.fromarray(_rgb(128, 128, k)))
    return root


def test_two_shards_cover_a_folder_exactly_once(small, tmp_path, capsys):
    for i in range(2):
        code, out, err = _main(capsys, "--task", "depth", "--input", small, "--output", tmp_path / f"shard{i}",
                               "--shard", f"{i}/2", "--outputs", "npy", "--tta", "off")
        assert code == 0, err
    files = [sorted(p.name for p in (tmp_path / f"shard{i}").glob("*.npy")) for i in range(2)]
    assert files == [["img0.depth.npy", "img2.depth.npy"], ["img1.depth.npy"]]
    merged = tmp_path / "merged"  # merging is copying
    merged.mkdir()
    for i in range(2):
        for p in (tmp_path / f"shard{i}").iterdir():
            (merged / p.name).write_bytes(p.read_bytes())
    rgb = np.asarray(Image.open(small / "img1.png"))
    alone = mp_deploy.predict(rgb, task="depth", tta="off")["depth"]
    assert np.array_equal(np.load(merged / "img1.depth.npy"), alone)  # keyed by input: img1's file holds img1


def test_resume_after_an_interrupted_run_redoes_nothing_complete(small, tmp_path, capsys):
    out = tmp_path / "out"
    run = predict_iter(small, out, task="depth", tta="off")
    first = next(run)
    run.close()  # interrupted after the first input (as Ctrl-C or SIGTERM would: its files are written whole)
    done = {p: p.stat().st_mtime_ns for p in out.glob("img0.*")}
    assert first.key == "img0.png" and len(done) == 3
    stale = out / "img1.depth.png"  # one file of the next input only: it is incomplete, and redone
    _save(stale, Image.new("RGB", (8, 8)))
    code, text, err = _main(capsys, "--task", "depth", "--input", small, "--output", out, "--resume", "--tta", "off")
    assert code == 0, err
    assert "2 inputs to do" in text and "1 complete and skipped" in text and "2 images" in text
    assert {p: p.stat().st_mtime_ns for p in out.glob("img0.*")} == done  # nothing complete was redone
    assert all((out / f"img{k}{suffix}").is_file() for k in (1, 2)
               for suffix in (".depth.png", ".depth16.png", ".depth.npy"))
    assert Image.open(stale).size == (128, 128)
    code, _, err = _main(capsys, "--task", "depth", "--input", small, "--output", out, "--resume")
    assert code == 2 and "other settings" in err  # tta auto would mix different outputs into the folder


# ------------------------------------------------------------------ segmentation, pose, video

def test_segmentation_outputs(folder, tmp_path, capsys):
    code, out, err = _main(capsys, "--task", "seg", "--input", folder / "a.png", "--output", tmp_path)
    assert code == 0, err
    palette = Image.open(tmp_path / "a.seg.png")
    labels = np.asarray(Image.open(tmp_path / "a.labels.png"))
    assert palette.mode == "P" and np.array_equal(np.asarray(palette), labels)
    assert labels.shape == (128, 160) and labels.max() < 7  # the synthetic scenes' 7 classes
    assert np.asarray(Image.open(tmp_path / "a.overlay.png")).shape == (128, 160, 3)


def test_pose_keypoints_in_coco_result_format(folder, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [[10, 5, 60, 100, 0.9], [80, 10, 50, 90]]}))
    code, out, err = _main(capsys, "--task", "pose", "--input", folder / "a.png", "--output", tmp_path / "out",
                           "--boxes", boxes)
    assert code == 0, err
    records = json.loads((tmp_path / "out/a.keypoints.json").read_text())
    assert len(records) == 2 and records[0]["bbox"] == [10, 5, 60, 100]
    for r in records:
        assert r["image_id"] == 0 and r["category_id"] == 1 and len(r["keypoints"]) == 17 * 3
        assert np.isfinite(r["keypoints"]).all() and np.isfinite(r["score"])
    assert np.asarray(Image.open(tmp_path / "out/a.pose.png")).shape == (128, 160, 3)


def _video(path: Path, frames: int, audio: bool, faststart: bool = False, rate: int = 7):
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"} if faststart else {}) as out:
        video = out.add_stream("libx264", rate=rate)
        video.height, video.width, video.pix_fmt = 128, 128, "yuv420p"  # one depth window a frame
        sound = out.add_stream("aac", rate=8000) if audio else None
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(_rgb(128, 128, k), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.float32), format="fltp", layout="mono")
            samples.sample_rate = 8000
            for packet in [*sound.encode(samples), *sound.encode()]:
                out.mux(packet)
    return path


def test_video_in_video_out_and_a_video_that_ends_early(tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    _video(clips / "clip.mp4", 4, audio=True)
    whole = _video(tmp_path / "long.mp4", 8, audio=False, faststart=True)
    (clips / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])
    code, out, err = _main(capsys, "--task", "depth", "--input", clips, "--output", tmp_path / "out", "--tta", "off")
    assert code == 11 and len(err.strip().splitlines()) == 1 and "cut.mp4: the video ended early" in err
    with av.open(str(tmp_path / "out/clip.depth.mp4")) as result:
        assert [s.type for s in result.streams] == ["video"]  # audio dropped
        stream = result.streams.video[0]
        assert stream.average_rate == 7 and (stream.height, stream.width) == (128, 128)
        assert sum(1 for _ in result.decode(stream)) == 4
    with av.open(str(tmp_path / "out/cut.depth.mp4")) as result:
        assert 0 < sum(1 for _ in result.decode(video=0)) < 8  # the frames that were there


# ------------------------------------------------------------------ bad arguments

def test_bad_output_folder_empty_input_and_missing_pieces(folder, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _main(capsys, "--task", "depth", "--input", folder, "--output", tmp_path / "file/out")
    assert code == 2 and "a file is in the way" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, _, err = _main(capsys, "--task", "depth", "--input", tmp_path / "empty", "--output", tmp_path / "o")
    assert code == 2 and "no images or videos" in err
    code, _, err = _main(capsys, "--input", folder, "--output", tmp_path / "o")
    assert code == 2 and "--task" in err  # no model and no task: which demo?
    code, _, err = _main(capsys, "--task", "seg", "--input", folder, "--output", tmp_path / "o", "--backend", "onnx")
    assert code == 2 and "mp-deploy build" in err
    code, _, err = _main(capsys, "--task", "depth", "--input", folder, "--output", tmp_path / "o",
                         "--server", "http://127.0.0.1:9")  # nothing listens there
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and ("127.0.0.1:9" in err or "client" in err)
