"""The C++ library and mp_infer (cpp/) against the Python runtime, on a tiny AOTInductor depth package.

Builds with CMake into a temporary folder (MP_CPP_BUILD_DIR reuses one), exports a tiny depth model to a
CPU fp32 .pt2 once per module, and checks that mp_infer's float output (--npy) equals
Engine.load(...).run(...) within 1e-4 relative L2, plus the error paths (no output file on failure); with
CUDA (`-m gpu`), the same on a CUDA fp16 package. CMake, Ninja and nlohmann_json come from the `test` extra
(pip), libpng / libjpeg and a C++ compiler from the system: skipped, with the reason, where one is missing.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
    cmd = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={_prefix_path()}"]
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


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    build_dir = Path(os.environ.get("MP_CPP_BUILD_DIR") or tmp_path_factory.mktemp("cpp-build"))
    return _Build(_configure(build_dir), build_dir)


def _export(task: str, folder: Path, device: str = "cpu", precision: str = "fp32") -> Path:
    """A tiny seeded model as a static 64x64 .pt2 with its sidecar (fp16: fp16 weights, fp32 norms, as CUDA
    builds make them).

    One refinement step instead of three: the C++ path is the same and the compile takes half as long.
    """
    from mp_deploy.artifacts import Sidecar, describe_io, gpu_info, write_sidecar
    from mp_deploy.configs import preset_to_dict
    from mp_deploy.export.networks import to_precision
    from mp_deploy.models import seeded_model

    path = folder / f"{task}.pt2"
    model = seeded_model(task, size="tiny", refine_steps=1).eval()
    if precision == "fp16":
        model = to_precision(model, "fp16")
    model = model.to(device)
    x = torch.rand(1, 3, SIZE, SIZE).to(device, torch.float16 if precision == "fp16" else torch.float32)
    with torch.no_grad():
        ep = torch.export.export(model, (x,))
        # the wrapper at -O0 compiles faster; the kernels keep their optimisation level
        torch._inductor.aoti_compile_and_package(
            ep, package_path=str(path), inductor_configs={"aot_inductor.compile_wrapper_opt_level": "O0"})
    preset = preset_to_dict(model.preset)
    inp, out = describe_io(task, preset, precision)
    side = Sidecar(task=task, preset=preset, size="tiny", backend="aoti", device=device, precision=precision,
                   shapes={"batch": [1, 1, 1], "height": [SIZE] * 3, "width": [SIZE] * 3, "multiple_of": 64},
                   input=inp, output=out, source={"seeded": "tiny", "refine_steps": 1},
                   gpu=gpu_info() if device == "cuda" else None)
    write_sidecar(path, side)
    return path


@pytest.fixture(scope="module")
def depth_pt2(build, tmp_path_factory):
    return _export("depth", tmp_path_factory.mktemp("aoti"))


@pytest.fixture(scope="module")
def mp_infer(build, depth_pt2):
    return build.wait()


@pytest.fixture(scope="module")
def engine(depth_pt2):
    from mp_deploy.engine import Engine

    return Engine.load(depth_pt2)


def _image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def _run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


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
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() * (1 / 255)
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert _rel_l2(np.load(tmp_path / "depth.npy"), engine.run(x)["depth"].numpy()) <= PARITY
    assert np.array(Image.open(tmp_path / "depth16.png")).shape == (100, 80)
    assert np.array(Image.open(tmp_path / "vis.png")).shape == (100, 80)  # grayscale without --colormap

    Image.fromarray(img).save(tmp_path / "in.jpg", quality=95)
    r = _run(mp_infer, "--engine", depth_pt2, "--input", tmp_path / "in.jpg", "--output", tmp_path / "jpg.png")
    assert r.returncode == 0, r.stderr
    assert np.array(Image.open(tmp_path / "jpg.png")).shape == (100, 80)


def _copy(pt2: Path, folder: Path, name: str) -> Path:
    dst = folder / name
    shutil.copyfile(pt2, dst)
    shutil.copyfile(str(pt2) + ".json", str(dst) + ".json")
    return dst


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
    engine = _copy(depth_pt2, tmp_path, "model.pt2")
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
        engine = _copy(depth_pt2, tmp_path, "model.engine")
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
