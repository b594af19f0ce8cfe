"""The C++ library and mp_infer (cpp/) against the Python runtime, on a tiny AOTInductor depth package.

Builds with CMake into a temporary folder (MP_CPP_BUILD_DIR reuses one), exports a tiny depth model to a
CPU fp32 .pt2 once per module (its contract embedded, as `mp-deploy build` does), and checks that
mp_infer's float output (--npy) equals Engine.load(...).run(...) within 1e-4 relative L2; then what the C++
side refuses (issue 13): sidecars that break the schema or differ from the contract inside the package,
plugins from elsewhere, images above the pixel cap, two outputs on one file, and a failed commit, each
with one `mp_infer: error:` line and no output left; and a seeded fuzz of sidecars and image bytes. With
CUDA (`-m gpu`), the same parity on a CUDA fp16 package. CMake, Ninja and nlohmann_json come from the `test`
extra (pip), libpng / libjpeg and a C++ compiler from the system: skipped, with the reason, where one is
missing.
"""
import atexit
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.artifact_edits import (black_png, build_plugin, copy_artifact, edit_meta, jpeg_with_size, read_meta,
                                    rebind, rewrite_contract)
from helpers.mutations import mutate_image, mutate_sidecar
from mp_deploy.artifacts import MAX_PIXELS, ArtifactError, contract_of, read_sidecar, sidecar_path
from mp_deploy.util import sha256_file

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # the package's one input size (64 is the model's multiple)
PARITY = 1e-4  # mp_infer against Engine.run on the same artifact: relative L2
# find_package failures in CMake's output -> how to install what provides it
DEPENDENCIES = {"PNG": "apt-get install libpng-dev", "JPEG": "apt-get install libjpeg-dev",
                "nlohmann_json": 'pip install -e ".[test]", which installs nlohmann-json'}


class _Build:
    """`cmake --build` running in the background while the .pt2 compiles (both are minutes on 2 cores)."""

    def __init__(self, cmake: str, build_dir: Path):
        self.exe = build_dir / "cpp" / "mp_infer"
        self.log = build_dir / "build.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)],
                                         stdout=log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)  # a run stopped early (Ctrl-C, -x) leaves no compiler behind

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)

    def wait(self) -> Path:
        if self.proc.wait() != 0:
            pytest.fail(f"C++ build failed:\n{self.log.read_text()[-4000:]}")
        return self.exe


def _tool(name: str) -> str | None:
    """`name` from this environment's scripts folder (the `test` extra's cmake and ninja are there, also when
    the environment is not activated), else from PATH."""
    return shutil.which(name, path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))


def _prefix_path() -> str:
    """CMAKE_PREFIX_PATH: libtorch's CMake package, and pip's nlohmann-json, whose package folder holds
    include/nlohmann/json.hpp (headers only: cpp/CMakeLists.txt finds them under a prefix)."""
    prefixes = [torch.utils.cmake_prefix_path]
    spec = importlib.util.find_spec("nlohmann_json")
    if spec is not None:
        prefixes += list(spec.submodule_search_locations)
    return ";".join(prefixes)


def _configure(build_dir: Path) -> str:
    """Configure the build in build_dir; returns the cmake to build it with."""
    cmake = _tool("cmake")
    if cmake is None:
        pytest.skip('cmake not found (pip install -e ".[test]")')
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler found (apt-get install g++)")
    cmd = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={_prefix_path()}",
           "-DMP_DEPLOY_BUILD_TESTS=ON"]
    ninja = _tool("ninja")
    if ninja and not (build_dir / "CMakeCache.txt").exists():  # a reused folder keeps its generator
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    out = result.stdout + result.stderr
    if result.returncode != 0:
        for name, install in DEPENDENCIES.items():
            if f"Could NOT find {name}" in out or f'provided by "{name}"' in out:
                pytest.skip(f"{name} not found by CMake ({install})")
        if "No CMAKE_CXX_COMPILER could be found" in out:
            pytest.skip("CMake found no C++ compiler")
        pytest.fail(f"cmake configure failed:\n{out[-4000:]}")
    assert "AOTInductor backend" in out, f"libtorch not found by CMake:\n{out[-4000:]}"
    return cmake


# The build and the exported package, made once per session and shared with test_cpp_hostile.py (its fixtures
# call these; both modules see this one module object): each takes minutes on 2 cores.
_SESSION: dict = {}


def shared_build(tmp_path_factory) -> _Build:
    if "build" not in _SESSION:
        build_dir = Path(os.environ.get("MP_CPP_BUILD_DIR") or tmp_path_factory.mktemp("cpp-build"))
        _SESSION["build"] = _Build(_configure(build_dir), build_dir)
    return _SESSION["build"]


def shared_depth_pt2(tmp_path_factory) -> Path:
    """The tiny depth package (read-only: tests edit copies). MP_CPP_DEPTH_PT2 names one _export made earlier,
    reused instead of exporting again (while working on the C++ side)."""
    if "depth_pt2" not in _SESSION:
        given = os.environ.get("MP_CPP_DEPTH_PT2")
        _SESSION["depth_pt2"] = Path(given) if given else _export("depth", tmp_path_factory.mktemp("aoti"))
    return _SESSION["depth_pt2"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return shared_build(tmp_path_factory)


def _export(task: str, folder: Path, device: str = "cpu", precision: str = "fp32") -> Path:
    """A tiny seeded model as a static 64x64 .pt2 with its sidecar (fp16: fp16 weights, fp32 norms, as CUDA
    builds make them).

    One refinement step instead of three: the C++ path is the same and the compile takes half as long.
    """
    from mp_deploy.artifacts import Sidecar, describe_io, gpu_info, write_sidecar
    from mp_deploy.backends.aoti import CPU_CONFIGS, embed_contract_pt2
    from mp_deploy.configs import preset_to_dict
    from mp_deploy.precision import to_precision
    from mp_deploy.tasks import seeded_model

    path = folder / f"{task}.pt2"
    model = seeded_model(task, size="tiny", refine_steps=1).eval()
    if precision == "fp16":
        model = to_precision(model, "fp16")
    model = model.to(device)
    x = torch.rand(1, 3, SIZE, SIZE).to(device, torch.float16 if precision == "fp16" else torch.float32)
    with torch.no_grad():
        ep = torch.export.export(model, (x,))
        # the wrapper at -O0 compiles faster; the kernels keep their optimisation level
        # CPU: the package follows the runtime's thread count, as `mp-deploy build` compiles it (backends/aoti.py)
        configs = {"aot_inductor.compile_wrapper_opt_level": "O0"} | (CPU_CONFIGS if device == "cpu" else {})
        torch._inductor.aoti_compile_and_package(ep, package_path=str(path), inductor_configs=configs)
    preset = preset_to_dict(model.preset)
    inp, out = describe_io(task, preset, precision)
    side = Sidecar(task=task, preset=preset, size="tiny", backend="aoti", device=device, precision=precision,
                   shapes={"batch": [1, 1, 1], "height": [SIZE] * 3, "width": [SIZE] * 3, "multiple_of": 64},
                   input=inp, output=out, source={"seeded": "tiny", "refine_steps": 1},
                   gpu=gpu_info() if device == "cuda" else None)
    embed_contract_pt2(path, side.contract())
    write_sidecar(path, side)
    return path


@pytest.fixture(scope="module")
def depth_pt2(build, tmp_path_factory):
    return shared_depth_pt2(tmp_path_factory)


@pytest.fixture(scope="module")
def mp_infer(build, depth_pt2):
    return build.wait()


@pytest.fixture(scope="module")
def engine(depth_pt2):
    from mp_deploy.engine import Engine

    return Engine.load(depth_pt2)


def pose_heatmaps_to_decode(seed: int = 0) -> np.ndarray:
    """(17, 16, 12) heatmaps with the cases a decoder can get wrong: an inner peak whose neighbours pull it both
    ways, peaks on the border and one cell in (no quarter shift there), a map with no positive value (-1), a
    tie (the first maximum wins) and a flat neighbourhood (no shift)."""
    heat = np.random.default_rng(seed).normal(0, 0.1, (17, 16, 12)).astype(np.float32)
    heat[0, 7, 5] = 1.0  # inner: its right and lower neighbours are higher than the left and upper ones
    heat[0, 7, 6], heat[0, 7, 4], heat[0, 8, 5], heat[0, 6, 5] = 0.8, 0.2, 0.7, 0.1
    heat[1, 0, 3] = 2.0  # top border
    heat[2, 9, 1] = 2.0  # one cell from the left border: not inner (px > 1 is needed)
    heat[3] = -np.abs(heat[3]) - 0.01  # no positive value: -1 before the mapping
    heat[4, 5, 5] = heat[4, 9, 9] = 3.0  # a tie: the first in row-major order (its neighbours equal: no shift)
    heat[4, 5, 4] = heat[4, 5, 6] = heat[4, 4, 5] = heat[4, 6, 5] = 0.0
    heat[5, 6, 6] = 1.0  # flat neighbourhood: equal neighbours, no shift
    heat[5, 6, 5] = heat[5, 6, 7] = heat[5, 5, 6] = heat[5, 7, 6] = 0.5
    return heat


def test_pose_decode_is_one_decoder(build, tmp_path):
    """The same heatmaps give the same keypoints through the Python runtime (Engine.run's heatmap_keypoints),
    predict and evaluation (decode_heatmaps with the crop's centre and size) and the C++ library (Engine::run's
    decoder, through the mp_decode_heatmaps test program), and they are mmpose's: the hand-checked cases."""
    from mp_deploy.tasks.pose import decode_heatmaps, heatmap_keypoints

    heat = pose_heatmaps_to_decode()
    k, h, w = heat.shape
    input_h, input_w = 4 * h, 4 * w
    runtime = heatmap_keypoints(torch.from_numpy(heat)[None], (input_h, input_w))[0].numpy()
    coords, maxvals = decode_heatmaps(heat[None], [[input_w / 2, input_h / 2]], [[input_w, input_h]])
    np.testing.assert_allclose(runtime[:, :2], coords[0], atol=1e-4)
    np.testing.assert_allclose(runtime[:, 2], maxvals[0], atol=1e-6)
    # by hand (stride 4): inner peak (5, 7) moved +0.25 in x and y; border and near-border peaks unmoved; -1 * 4
    assert runtime[0, :2].tolist() == [5.25 * 4, 7.25 * 4] and runtime[1, :2].tolist() == [12.0, 0.0]
    assert runtime[2, :2].tolist() == [4.0, 36.0] and runtime[3, :2].tolist() == [-4.0, -4.0]
    assert runtime[4, :2].tolist() == [20.0, 20.0] and runtime[5, :2].tolist() == [24.0, 24.0]

    exe = build.wait().parent / "mp_decode_heatmaps"
    raw = tmp_path / "heat.f32"
    raw.write_bytes(heat.astype("<f4").tobytes())
    done = subprocess.run([str(exe), str(raw), str(k), str(h), str(w), str(input_h), str(input_w)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cpp = np.array([[float(v) for v in line.split()] for line in done.stdout.splitlines()])
    np.testing.assert_allclose(cpp, runtime, atol=1e-4)


def _image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def _run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def _compiler() -> str:
    return next(shutil.which(c) for c in ("cc", "gcc", "clang", "c++") if shutil.which(c))


def _python_depth(engine, img: np.ndarray) -> np.ndarray:
    """Engine.run on an RGB uint8 image, resized (bilinear) to the package's size first as mp_infer does."""
    if img.shape[:2] == (SIZE, SIZE):
        return engine.run(img)["depth"].numpy()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() * (1 / 255)
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return engine.run(x)["depth"].numpy()


def _rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def test_depth_matches_python(mp_infer, depth_pt2, engine, tmp_path):
    img = _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", out / "vis.png",
             "--raw", out / "depth16.png", "--npy", out / "depth.npy", "--colormap")
    assert r.returncode == 0, r.stderr
    ref = engine.run(img)["depth"].numpy()
    got = np.load(out / "depth.npy")
    assert got.shape == ref.shape == (1, 1, SIZE, SIZE)
    assert _rel_l2(got, ref) <= PARITY
    # 16-bit PNG: depth * png16_scale (1000 for NYU: millimetres), rounded
    raw = np.array(Image.open(out / "depth16.png"))
    scale = json.loads(Path(str(depth_pt2) + ".json").read_text())["output"]["png16_scale"]
    assert raw.dtype == np.uint16 and raw.shape == (SIZE, SIZE)
    assert np.abs(raw.astype(np.float64) - ref[0, 0] * scale).max() <= 0.5 + 1e-3
    vis = np.array(Image.open(out / "vis.png"))
    assert vis.shape == (SIZE, SIZE, 3) and vis.dtype == np.uint8
    assert sorted(p.name for p in out.iterdir()) == ["depth.npy", "depth16.png", "vis.png"]  # no temporaries


def test_resized_input_and_jpeg(mp_infer, depth_pt2, engine, tmp_path):
    """An image the engine cannot take is resized (bilinear) to the sidecar's optimal size and back."""
    img = _image(tmp_path / "in.png", 100, 80, seed=1)
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", tmp_path / "vis.png",
             "--raw", tmp_path / "depth16.png", "--npy", tmp_path / "depth.npy")
    assert r.returncode == 0, r.stderr
    assert _rel_l2(np.load(tmp_path / "depth.npy"), _python_depth(engine, img)) <= PARITY
    assert np.array(Image.open(tmp_path / "depth16.png")).shape == (100, 80)
    assert np.array(Image.open(tmp_path / "vis.png")).shape == (100, 80)  # grayscale without --colormap

    Image.fromarray(img).save(tmp_path / "in.jpg", quality=95)
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.jpg", "--output", tmp_path / "jpg.png")
    assert r.returncode == 0, r.stderr
    assert np.array(Image.open(tmp_path / "jpg.png")).shape == (100, 80)


def _corrupt(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:1000])
    return path


@pytest.mark.parametrize("case, message", [
    ("missing engine", "not found"),
    ("missing sidecar", "no sidecar"),
    ("corrupted artifact", "checksum"),
    ("wrong engine kind", "backend"),
    ("missing image", "cannot read image"),
    ("not an image", "not a PNG or JPEG"),
    ("truncated image", "cannot decode"),
    ("missing output folder", "cannot create output"),
])
def test_errors(mp_infer, depth_pt2, tmp_path, case, message):
    image = tmp_path / "in.png"
    _image(image, SIZE, SIZE)
    engine = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    out = tmp_path / "out"
    out.mkdir()
    output = out / "depth.png"
    if case == "missing engine":
        engine = tmp_path / "absent.pt2"
    elif case == "missing sidecar":
        os.remove(str(engine) + ".json")
    elif case == "corrupted artifact":
        _corrupt(engine)
    elif case == "wrong engine kind":
        engine = copy_artifact(depth_pt2, tmp_path, "model.engine")
    elif case == "missing image":
        image = tmp_path / "absent.png"
    elif case == "not an image":
        image.write_text("not an image\n")
    elif case == "truncated image":
        _truncate(image)
    elif case == "missing output folder":
        output = out / "absent" / "depth.png"
    r = _run(mp_infer, "--engine", engine, "--input", image, "--output", output, "--raw", out / "raw.png",
             "--npy", out / "depth.npy")
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert list(out.iterdir()) == []  # no output, no temporaries


@pytest.mark.slow  # two more AOTInductor compiles (about 4 minutes on 2 cores): run with -m slow
@pytest.mark.parametrize("task", ["seg", "pose"])
def test_seg_and_pose_match_python(mp_infer, task, tmp_path):
    from mp_deploy.engine import Engine

    pt2 = _export(task, tmp_path)
    img = _image(tmp_path / "in.png", SIZE, SIZE)
    args = ["--engine", pt2, "--input", tmp_path / "in.png", "--output", tmp_path / "vis.png",
            "--npy", tmp_path / "raw.npy"]
    r = _run(mp_infer, *args, *(["--raw", tmp_path / "labels.png"] if task == "seg" else []))
    assert r.returncode == 0, r.stderr
    ref = Engine.load(pt2).run(img)
    assert _rel_l2(np.load(tmp_path / "raw.npy"), ref["logits" if task == "seg" else "heatmaps"].numpy()) <= PARITY
    if task == "seg":
        assert (np.array(Image.open(tmp_path / "labels.png")) == ref["labels"][0].numpy()).all()
    else:  # stdout: "index x y score" per keypoint
        got = np.array([line.split()[1:] for line in r.stdout.splitlines()], dtype=np.float64)
        np.testing.assert_allclose(got, ref["keypoints"][0].numpy(), atol=0.01)
    assert np.array(Image.open(tmp_path / "vis.png")).shape == (SIZE, SIZE, 3)


def test_bad_arguments(mp_infer, tmp_path):
    r = _run(mp_infer, "--engine", tmp_path / "x.pt2")
    assert r.returncode == 2 and "usage" in r.stderr


# ---------------------------------------------------------------- what the C++ side refuses (issue 13)

def _refused(r, out: Path, message: str, rc: int = 1) -> None:
    """mp_infer failed with `rc`, one `mp_infer: error:` line (for rc 1) holding `message`, and no output."""
    assert r.returncode == rc, f"exit {r.returncode}, stderr:\n{r.stderr}"
    assert message in r.stderr, r.stderr
    if rc == 1:
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("mp_infer: error: "), r.stderr
    assert sorted(p.name for p in out.iterdir()) == [], "output left behind"


def _run_all(exe, pt2: Path, image: Path, out: Path):
    return _run(exe, "--engine", pt2, "--input", image, "--output", out / "vis.png", "--raw", out / "raw.png",
                "--npy", out / "depth.npy")


def _set(path: str, value):
    """An edit of a sidecar field given by its dotted path ("shapes.height", "plugins")."""
    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def _drop(key: str):
    return lambda meta: meta.pop(key)


SIDECAR_EDITS = {  # name: (edit of the sidecar alone, what the message names)
    "task -> seg": (_set("task", "seg"), "preset.task 'depth' differs from task 'seg'"),
    "unknown task": (_set("task", "banana"), "task is 'banana', not one of depth, seg, pose"),
    "shapes widened": (_set("shapes.height", [64, 64, 128]), "sidecar field 'shapes' differs from the contract"),
    "shapes inconsistent": (_set("shapes.width", [64, 128, 64]), "shapes.width [64,128,64] is not min <= opt <= max"),
    "plugin by absolute path": (_set("plugins", [{"name": "/any/path/x.so", "sha256": "0" * 64}]),
                                "plugins[0].name '/any/path/x.so' does not match"),
    "plugin outside the folder": (_set("plugins", [{"name": "../x.so", "sha256": "0" * 64}]),
                                  "plugins[0].name '../x.so'"),
    "plugins as plain strings": (_set("plugins", ["x.so"]), "plugins[0] must be an object, got string"),
    "height as a string": (_set("shapes.height", ["64", 64, 64]), "shapes.height[0] must be an integer, got string"),
    "scale as a list": (_set("input.scale", [1]), "input.scale must be a number, got array"),
    "integer as a float": (_set("shapes.multiple_of", 64.0), "shapes.multiple_of must be an integer, got 64.0"),
    "unknown backend": (_set("backend", "banana"), "backend is 'banana', not one of onnx, aoti, tensorrt"),
    "unknown device": (_set("device", "banana"), "device is 'banana'"),
    "unknown field": (_set("output.colour", "red"), "output has an unknown field 'colour'"),
    "missing field": (_drop("input"), "the JSON lacks input"),
    "null file_bytes": (_set("file_bytes", None), "file_bytes must not be null"),
    "old format": (_set("format", "mp-deploy-artifact/1"), 'has format "mp-deploy-artifact/1"'),
    "cuda without gpu": (_set("device", "cuda"), "gpu is null: a cuda artifact must name its gpu"),
}


@pytest.mark.parametrize("case", list(SIDECAR_EDITS) + ["wrong JSON", "not an object"])
def test_sidecar_edits_refused(mp_infer, depth_pt2, tmp_path, case):
    """Every sidecar field is checked against the one schema (compiled in from mp_deploy/artifact_schema.json)
    and the cross-field rules; an edit is refused with a message naming the field, and nothing is written."""
    pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    if case == "wrong JSON":
        sidecar_path(pt2).write_text(sidecar_path(pt2).read_text()[:-20])
        message = "is not valid JSON"
    elif case == "not an object":
        sidecar_path(pt2).write_text("[1, 2]")
        message = "the JSON must be an object, got array"
    else:
        edit, message = SIDECAR_EDITS[case]
        edit_meta(pt2, edit)
    _refused(_run_all(mp_infer, pt2, tmp_path / "in.png", out), out, message)


def _seg_output(meta):
    """A consistent relabelling of the depth package as a seg one: schema and cross-field rules pass."""
    meta["task"] = meta["preset"]["task"] = "seg"
    meta["preset"]["num_classes"] = 150
    meta["output"] = {"name": "logits", "kind": "segmentation", "num_classes": 150, "stride": 1,
                      "postprocess": "argmax over classes", "dtype": "float32"}


@pytest.mark.parametrize("case, message", [
    ("sidecar relabelled seg", "sidecar field 'task' differs from the contract inside the artifact"),
    ("max_depth 10 for 10.0", "sidecar field 'output' differs"),  # as Python's json.dumps comparison
    ("contract widened inside", "sidecar field 'shapes' differs"),
    ("no contract", "holds no contract (extra/mp_deploy_contract.json)"),
    ("compressed contract", "is compressed or encrypted, not stored"),
    ("contract not JSON", "the contract inside"),
    ("contract lacks a field", "does not have the fields"),
])
def test_embedded_contract(mp_infer, depth_pt2, tmp_path, case, message):
    """The sidecar is compared field by field with the contract inside the .pt2; a sidecar consistent in
    itself but not with its package, or a package without a readable contract, is refused."""
    pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    contract = contract_of(read_meta(pt2))
    if case == "sidecar relabelled seg":
        edit_meta(pt2, _seg_output)
    elif case == "max_depth 10 for 10.0":
        edit_meta(pt2, _set("output.max_depth", 10))
    elif case == "contract widened inside":
        rewrite_contract(pt2, {**contract, "shapes": {**contract["shapes"], "width": [64, 64, 128]}})
    elif case == "no contract":
        rewrite_contract(pt2, None)
    elif case == "compressed contract":
        rewrite_contract(pt2, contract, compress=True)
    elif case == "contract not JSON":
        rewrite_contract(pt2, "{not json")
    else:
        rewrite_contract(pt2, {k: v for k, v in contract.items() if k != "plugins"})
    assert sha256_file(pt2) == read_meta(pt2)["file_sha256"]  # the package matches its sidecar: only the contract tells
    _refused(_run_all(mp_infer, pt2, tmp_path / "in.png", out), out, message)


def test_shape_guard(mp_infer, depth_pt2, tmp_path):
    """Whatever the image's size, the package only ever sees the 64x64 input it was built for (images that do
    not fit are resized; the backend checks the shape again right before it runs), and the outputs come back
    at the image's size. (Sides under MIN_SIDE are refused: test_cpp_hostile.py.)"""
    for h, w in [(32, 33), (63, 130), (65, 64)]:
        _image(tmp_path / "in.png", h, w, seed=h)
        r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--output", tmp_path / "vis.png",
                 "--npy", tmp_path / "depth.npy")
        assert r.returncode == 0, r.stderr
        assert np.load(tmp_path / "depth.npy").shape == (1, 1, SIZE, SIZE)
        assert np.array(Image.open(tmp_path / "vis.png")).shape == (h, w)


@pytest.mark.parametrize("case", ["absolute path", "beside but not in the contract", "replaced after signing",
                                  "signed and beside"])
def test_plugins(mp_infer, depth_pt2, tmp_path, case):
    """Plugin libraries load only from the artifact's folder, by plain name, with the sha256 the contract
    inside the package names; anything else is refused before dlopen (their constructors never run)."""
    pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "loaded.txt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if case == "absolute path":
        lib = build_plugin(_compiler(), elsewhere, "libx.so", marker)
        edit_meta(pt2, _set("plugins", [{"name": str(lib), "sha256": sha256_file(lib)}]))
        message = f"plugins[0].name '{lib}"
    elif case == "beside but not in the contract":
        lib = build_plugin(_compiler(), tmp_path, "libx.so", marker)
        edit_meta(pt2, _set("plugins", [{"name": lib.name, "sha256": sha256_file(lib)}]))
        message = "sidecar field 'plugins' differs from the contract"
    else:
        lib = build_plugin(_compiler(), tmp_path, "libx.so", marker)
        rebind(pt2, _set("plugins", [{"name": lib.name, "sha256": sha256_file(lib)}]))
        if case == "signed and beside":
            r = _run(mp_infer, "--engine", pt2, "--input", tmp_path / "in.png", "--npy", out / "depth.npy")
            assert r.returncode == 0, r.stderr
            assert marker.read_text() == "loaded\n"  # dlopened from the artifact's folder
            return
        build_plugin(_compiler(), tmp_path, "libx.so", tmp_path / "other.txt")  # same name, other code
        marker = tmp_path / "other.txt"
        message = "(plugin library) does not match the checksum in its sidecar"
    _refused(_run_all(mp_infer, pt2, tmp_path / "in.png", out), out, message)
    assert not marker.exists(), "the plugin's code ran"


def _peak_rss(exe, *args) -> tuple[int, str, int]:
    """Exit status, stderr and peak resident memory (KB) of one run (killed after 120 s: a hang fails), through
    mp_peak_rss: ru_maxrss of a process started from this one (torch imported, some 300 MB) would be this
    process's size, whatever the child does."""
    launcher = Path(exe).parent / "mp_peak_rss"
    r = subprocess.run([str(launcher), str(exe), *map(str, args)], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120, check=False)
    last = r.stdout.splitlines()[-1]
    assert last.startswith("peak_rss_kb "), r.stdout
    return r.returncode, r.stderr, int(last.split()[1])


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_pixel_cap(mp_infer, depth_pt2, tmp_path, kind):
    """A 10000x10000 image is refused from its header, before its pixels are decoded or allocated (the
    schema's max_pixels, as in Python): well under the 300 MB its pixels alone would take."""
    image = tmp_path / f"big.{kind}"
    if kind == "png":
        image.write_bytes(black_png(10000, 10000))
    else:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "small.jpg")
        image.write_bytes(jpeg_with_size((tmp_path / "small.jpg").read_bytes(), 10000, 10000))
    out = tmp_path / "out"
    out.mkdir()
    rc, stderr, rss = _peak_rss(mp_infer, "--engine", depth_pt2, "--input", image, "--output", out / "vis.png")
    assert rc == 1, stderr
    assert f"is 10000x10000: 100000000 pixels, more than the {MAX_PIXELS}" in stderr, stderr
    assert list(out.iterdir()) == []
    _, _, baseline = _peak_rss(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "absent.png", "--output",
                               out / "vis.png")  # the process alone (libtorch loaded), refused at the same place
    assert rss - baseline < 100 * 1024, f"{rss} KB resident, {baseline} KB without the image"


@pytest.mark.parametrize("outputs, message", [
    (("--output", "x.png", "--raw", "x.png"), "--raw and --output are the same file"),
    (("--output", "x.png", "--npy", "sub/../x.png"), "--npy and --output are the same file"),
    (("--output", "in.png"), "--output and --input are the same file"),
    (("--npy", "model.pt2.json"), "--npy and --engine's sidecar are the same file"),
])
def test_same_output_path(mp_infer, depth_pt2, tmp_path, outputs, message):
    """Two outputs on one file (compared after resolving the folder), or an output on an input, is a usage
    error (exit 2) before anything runs."""
    pt2 = copy_artifact(depth_pt2, tmp_path, "model.pt2")
    _image(tmp_path / "in.png", SIZE, SIZE)
    (tmp_path / "sub").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a if a.startswith("--") else tmp_path / a for a in outputs]
    r = _run(mp_infer, "--engine", pt2, "--input", tmp_path / "in.png", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# A rename that fails (EIO) for any path ending in /raw.png, through an LD_PRELOAD shim: the commit's last
# rename fails for a reason no check before it can see (a folder in the way is refused before anything runs).
FAILING_RENAME = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
static int doomed(const char* to) {
  size_t n = strlen(to);
  return n >= 8 && strcmp(to + n - 8, "/raw.png") == 0;
}
int rename(const char* from, const char* to) {
  if (doomed(to)) { errno = EIO; return -1; }
  return ((int (*)(const char*, const char*))dlsym(RTLD_NEXT, "rename"))(from, to);
}
int renameat2(int a, const char* from, int b, const char* to, unsigned flags) {
  if (doomed(to)) { errno = EIO; return -1; }
  return ((int (*)(int, const char*, int, const char*, unsigned))dlsym(RTLD_NEXT, "renameat2"))(a, from, b, to,
                                                                                             flags);
}
"""


def preload_library(tmp_path: Path, name: str, source: str) -> Path:
    """A shared library compiled from C `source`, for LD_PRELOAD."""
    (tmp_path / f"{name}.c").write_text(source)
    lib = tmp_path / f"{name}.so"
    subprocess.run([_compiler(), "-shared", "-fPIC", "-o", str(lib), str(tmp_path / f"{name}.c"), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    return lib


def test_failed_commit_leaves_nothing(mp_infer, depth_pt2, tmp_path):
    """The last rename fails (an LD_PRELOAD shim fails every rename onto raw.png): the renames already done are
    undone, a file that was at an output path before is put back, and no temporary is left."""
    shim = preload_library(tmp_path, "failing_rename", FAILING_RENAME)
    _image(tmp_path / "in.png", SIZE, SIZE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "vis.png").write_text("the previous preview")
    r = subprocess.run([str(mp_infer), "--engine", str(depth_pt2), "--input", str(tmp_path / "in.png"), "--output",
                        str(out / "vis.png"), "--raw", str(out / "raw.png"), "--npy", str(out / "depth.npy")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "LD_PRELOAD": str(shim)},
                       check=False)
    # written: depth.npy, vis.png, then raw.png, whose rename fails
    assert r.returncode == 1 and "cannot rename onto" in r.stderr and "raw.png" in r.stderr, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["vis.png"]
    assert (out / "vis.png").read_text() == "the previous preview"


# ---------------------------------------------------------------- fuzz

FUZZ_SEED = int(os.environ.get("MP_FUZZ_SEED", "13"))
FUZZ_CASES = int(os.environ.get("MP_FUZZ_CASES", "30"))  # about 25 s on 2 idle cores: most are refused at once


def _python_accepts(pt2: Path) -> bool:
    try:
        read_sidecar(pt2)
        return True
    except ArtifactError:
        return False


def _contract_changed(meta: dict, data: bytes) -> bool:
    try:
        mutated = json.loads(data)
        return json.dumps(contract_of(mutated), sort_keys=True) != json.dumps(contract_of(meta), sort_keys=True)
    except Exception:  # not JSON, not an object, a contract field gone: not the same contract
        return True


def _problems(r, out: Path) -> list[str]:
    """What is wrong with one mp_infer run whatever its input: a signal, another exit status, not one
    error line, a file left behind by a failure or a missing / extra file after a success."""
    if r.returncode < 0:
        return [f"killed by signal {-r.returncode}"]
    if r.returncode not in (0, 1):
        return [f"exit status {r.returncode}"]
    left = sorted(p.name for p in out.iterdir())
    if r.returncode == 1:
        lines = r.stderr.splitlines()
        bad = [] if len(lines) == 1 and lines[0].startswith("mp_infer: error: ") else [f"stderr {r.stderr!r:.300}"]
        return bad + ([f"left {left}"] if left else [])
    return [] if left == ["depth.npy", "vis.png"] else [f"outputs {left}"]


def _image_result_problems(engine, image: Path, out: Path) -> list[str]:
    """A mutated image mp_infer ran: the result has the package's shape, the preview the image's size, and
    where PIL decodes the same bytes to the same size, the result is Engine.run's on PIL's pixels."""
    got = np.load(out / "depth.npy")
    if got.shape != (1, 1, SIZE, SIZE) or not np.isfinite(got).all():
        return [f"result {got.shape}"]
    size = np.array(Image.open(out / "vis.png")).shape[:2]
    try:
        with Image.open(image) as im:
            pixels = np.array(im.convert("RGB"))
    except Exception:  # damage PIL refuses and libpng / libjpeg accept (e.g. a broken ancillary chunk)
        return []
    if pixels.shape[:2] != size:
        return [f"decoded as {size}, PIL says {pixels.shape[:2]}"]
    return [] if _rel_l2(got, _python_depth(engine, pixels)) <= PARITY else ["differs from Engine.run on PIL's pixels"]


def _fuzz_cases(rng: random.Random, pt2: Path, images: dict, root: Path) -> list[tuple]:
    """FUZZ_CASES folders, each with the package (a hard link), a sidecar and an image, one of them mutated:
    (folder, image, what was done, the mutated sidecar or None)."""
    meta = read_meta(pt2)
    cases = []
    for i in range(FUZZ_CASES):
        folder = root / f"case{i}"
        (folder / "out").mkdir(parents=True)
        try:
            os.link(pt2, folder / "model.pt2")
        except OSError:  # another file system
            shutil.copyfile(pt2, folder / "model.pt2")
        sidecar, image = None, images[".png"]
        if i % 2 == 0:
            sidecar, what = mutate_sidecar(rng, meta)
        else:
            suffix = rng.choice([".png", ".jpg"])
            data, what = mutate_image(rng, images[suffix].read_bytes())
            image = folder / f"in{suffix}"
            image.write_bytes(data)
        sidecar_path(folder / "model.pt2").write_bytes(sidecar or sidecar_path(pt2).read_bytes())
        cases.append((folder, image, what, sidecar))
    return cases


def test_fuzz_mp_infer(mp_infer, depth_pt2, engine, tmp_path):
    """Seeded random mutations of the sidecar (values, types, deleted / added fields, raw text) and of image
    bytes (truncation, bit flips, header edits) against mp_infer. Every run ends in exit 0 with the right
    result or exit 1 with one `mp_infer: error:` line: no signal, no hang (the timeout), no file left
    behind, no success on a changed contract field, and the same verdict as Python's read_sidecar (one
    schema). MP_FUZZ_SEED / MP_FUZZ_CASES change the seed and the number of cases; two run at a time."""
    images = {".png": tmp_path / "in.png", ".jpg": tmp_path / "in.jpg"}
    reference = _python_depth(engine, _image(images[".png"], SIZE, SIZE))
    _image(images[".jpg"], 100, 80)
    cases = _fuzz_cases(random.Random(FUZZ_SEED), depth_pt2, images, tmp_path)

    def run(case):
        folder, image = case[:2]
        return _run(mp_infer, "--engine", folder / "model.pt2", "--input", image, "--output",
                    folder / "out" / "vis.png", "--npy", folder / "out" / "depth.npy")

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, cases))
    meta, failures = read_meta(depth_pt2), []
    for i, ((folder, image, what, sidecar), r) in enumerate(zip(cases, runs)):
        out = folder / "out"
        problems = _problems(r, out)
        if sidecar is not None:
            if r.returncode == 0 and _contract_changed(meta, sidecar):
                problems.append("success on a changed contract field")
            if (r.returncode == 0) != _python_accepts(folder / "model.pt2"):
                problems.append(f"Python's read_sidecar {'refuses' if r.returncode == 0 else 'accepts'} it")
            if r.returncode == 0 and not problems and _rel_l2(np.load(out / "depth.npy"), reference) > PARITY:
                problems.append("a different result")
        elif r.returncode == 0 and not problems:
            problems += _image_result_problems(engine, image, out)
        if problems:
            failures.append(f"case {i} ({what}): {'; '.join(problems)} | {r.stderr.strip()[:200]}")
    assert not failures, "\n".join(failures)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_package_matches_python(build, tmp_path):
    """mp_infer against the Python runtime on a CUDA fp16 package built here; mp_infer runs first, in its own
    process, so that a crash at its load fails this test with its signal."""
    from mp_deploy.engine import Engine

    pt2 = _export("depth", tmp_path, device="cuda", precision="fp16")
    exe = build.wait()
    img = _image(tmp_path / "in.png", SIZE, SIZE)
    r = _run(exe, "--engine", pt2, "--input", tmp_path / "in.png", "--output", tmp_path / "vis.png",
             "--npy", tmp_path / "depth.npy")
    assert r.returncode == 0, f"mp_infer exited with {r.returncode}:\n{r.stderr}"
    ref = Engine.load(pt2).run(img)["depth"].float().cpu().numpy()
    got = np.load(tmp_path / "depth.npy")
    assert got.shape == ref.shape == (1, 1, SIZE, SIZE)
    assert _rel_l2(got, ref) <= PARITY


def _peak_threads(cmd, env) -> tuple[subprocess.CompletedProcess, int]:
    """Run cmd, sampling its thread count (/proc/PID/task) until it exits (bounded: the run's own timeout)."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, deadline = 0, time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            peak = max(peak, len(os.listdir(f"/proc/{proc.pid}/task")))
        except FileNotFoundError:
            break
        time.sleep(0.002)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak


def test_cpu_thread_policy(mp_infer, depth_pt2, engine, tmp_path):
    """--threads, else MP_DEPLOY_CPU_THREADS, sets the CPU package's OpenMP pool (issue 24: more threads than
    spare cores collapse on a shared CPU); a bad value is refused before any work; the output does not change."""
    img = _image(tmp_path / "in.png", SIZE, SIZE)
    ref = engine.run(img)["depth"].numpy()
    base = {k: v for k, v in os.environ.items() if k != "MP_DEPLOY_CPU_THREADS"}
    peaks = {}
    for name, flag, env in (("one", ["--threads", "1"], {}), ("four", ["--threads", "4"], {}),
                            ("env-four", [], {"MP_DEPLOY_CPU_THREADS": "4"})):
        npy = tmp_path / f"{name}.npy"
        r, peaks[name] = _peak_threads([mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.png", "--npy", npy,
                                        *flag], base | env)
        assert r.returncode == 0, r.stderr
        assert _rel_l2(np.load(npy), ref) <= PARITY
    # four OpenMP threads mean at least three more than one thread (the pool's workers, the main thread)
    assert peaks["four"] >= peaks["one"] + 3 and peaks["env-four"] >= peaks["one"] + 3, peaks
    for flag, env, says in ((["--threads", "0"], {}, "--threads must be a whole number from 1 to 4096"),
                            (["--threads", "x"], {}, "--threads must be a whole number"),
                            ([], {"MP_DEPLOY_CPU_THREADS": "lots"}, "MP_DEPLOY_CPU_THREADS must be a whole number"),
                            ([], {"MP_DEPLOY_CPU_THREADS": "5000"}, "MP_DEPLOY_CPU_THREADS must be")):
        npy = tmp_path / "refused.npy"
        r = subprocess.run([str(mp_infer), "--engine", str(depth_pt2), "--input", str(tmp_path / "in.png"), "--npy",
                            str(npy), *flag], capture_output=True, text=True, timeout=300, env=base | env)
        assert r.returncode != 0 and says in r.stderr and not npy.exists(), (flag, env, r.stderr)
