"""Artifact sidecars: every exported file `X` has `X.json` saying what it is and what it was built with.

Loading checks the sidecar against the file (checksum) and this machine (GPU, TensorRT version) and refuses
a mismatch with a message that says what differs.
"""
from __future__ import annotations

import datetime
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mp_deploy import __version__
from mp_deploy.errors import UserError
from mp_deploy.util import atomic_write, sha256_file

FORMAT = "mp-deploy-artifact/1"
BACKEND_SUFFIX = {"onnx": ".onnx", "aoti": ".pt2", "tensorrt": ".engine", "torch-tensorrt": ".pt2"}


class ArtifactError(UserError, RuntimeError):
    """An artifact that is missing, corrupt, or built for another machine or runtime."""


def gpu_info(device=None) -> dict | None:
    if not torch.cuda.is_available():
        return None
    i = torch.device(device or "cuda").index or 0
    major, minor = torch.cuda.get_device_capability(i)
    return {"name": torch.cuda.get_device_name(i), "compute_capability": f"{major}.{minor}"}


def tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__


def runtime_versions() -> dict:
    versions = {"mp_deploy": __version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                "python": platform.python_version(), "tensorrt": tensorrt_version()}
    for name in ("onnx", "onnxruntime", "triton", "diffusers", "torch_tensorrt"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


@dataclass
class Sidecar:
    task: str
    preset: dict
    size: str
    backend: str  # onnx | aoti | tensorrt | torch-tensorrt
    device: str  # cpu | cuda
    precision: str  # fp32 | fp16
    shapes: dict  # {"batch": [min, opt, max], "height": [...], "width": [...], "multiple_of": m}
    input: dict  # name, layout, dtype, value range, colour order
    output: dict  # name, meaning, unit / scaling
    source: dict  # checkpoint path + sha256, or the seeded default
    versions: dict = field(default_factory=runtime_versions)
    gpu: dict | None = None
    file_sha256: str = ""
    file_bytes: int = 0
    extra_files: list = field(default_factory=list)  # e.g. ONNX external data, checked too
    parity: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def sidecar_path(path) -> Path:
    return Path(str(path) + ".json")


def describe_io(task: str, preset: dict, precision: str) -> tuple[dict, dict]:
    """The pre/post-processing contract every backend shares (also read by the C++ library)."""
    dtype = "float16" if precision == "fp16" else "float32"
    inp = {"name": "images", "layout": "NCHW", "dtype": dtype, "color": "RGB", "range": [0.0, 1.0],
           "scale": 1.0 / 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
           "note": "pixels / 255; the model maps [0, 1] to [-1, 1] itself"}
    if task == "depth":
        out = {"name": "depth", "kind": "depth", "unit": "m", "max_depth": preset["max_depth"], "stride": 1,
               "png16_scale": preset["png16_scale"]}
    elif task == "seg":
        out = {"name": "logits", "kind": "segmentation", "num_classes": preset["num_classes"], "stride": 1,
               "postprocess": "argmax over classes"}
    else:
        out = {"name": "heatmaps", "kind": "pose", "num_keypoints": preset["num_keypoints"], "stride": 4,
               "postprocess": "argmax per heatmap -> (x, y, score) in input pixels"}
    out["dtype"] = dtype
    return inp, out


def write_sidecar(artifact: Path, sidecar: Sidecar) -> None:
    """Fill in the checksums of the finished artifact and write its sidecar atomically."""
    artifact = Path(artifact)
    sidecar.file_sha256 = sha256_file(artifact)
    sidecar.file_bytes = artifact.stat().st_size
    sidecar.extra_files = [{"name": name, "sha256": sha256_file(artifact.parent / name),
                            "bytes": (artifact.parent / name).stat().st_size}
                           for name in (f["name"] if isinstance(f, dict) else f for f in sidecar.extra_files)]
    text = sidecar.to_json()
    atomic_write(sidecar_path(artifact), lambda tmp: Path(tmp).write_text(text))


def read_sidecar(artifact, check_machine: bool = True) -> dict:
    """Read and verify the sidecar of `artifact`; raise ArtifactError saying what differs."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    side = sidecar_path(artifact)
    if not side.is_file():
        raise ArtifactError(f"{artifact} has no sidecar {side.name}: re-export it with export/build_engine.py")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"sidecar {side} is not valid JSON: {e}") from e
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"sidecar {side} has format {meta.get('format')!r}, expected {FORMAT!r}")
    expected_suffix = BACKEND_SUFFIX.get(meta.get("backend"))
    if expected_suffix != artifact.suffix:
        raise ArtifactError(f"{artifact.name}: sidecar says backend {meta.get('backend')!r} "
                            f"({expected_suffix}), file is {artifact.suffix}")
    size = artifact.stat().st_size
    if size != meta["file_bytes"]:
        raise ArtifactError(f"{artifact} is {size} bytes, sidecar says {meta['file_bytes']}: truncated or replaced")
    if sha256_file(artifact) != meta["file_sha256"]:
        raise ArtifactError(f"{artifact} does not match the checksum in its sidecar: corrupted or replaced")
    for extra in meta.get("extra_files", []):
        p = artifact.parent / extra["name"]
        if not p.is_file() or sha256_file(p) != extra["sha256"]:
            raise ArtifactError(f"{p} (external data of {artifact.name}) is missing or does not match its checksum")
    if check_machine:
        check_machine_matches(meta, artifact)
    return meta


def check_machine_matches(meta: dict, artifact) -> None:
    built_gpu = meta.get("gpu")
    if meta["device"] == "cuda":
        here = gpu_info()
        if here is None:
            raise ArtifactError(f"{artifact} was built for CUDA ({built_gpu and built_gpu['name']}); "
                                "this machine has no CUDA device")
        if meta["backend"] in ("tensorrt", "torch-tensorrt") and here["name"] != built_gpu["name"]:
            raise ArtifactError(f"{artifact} was built for {built_gpu['name']}, this GPU is {here['name']}: "
                                "TensorRT engines are GPU-specific, rebuild it here")
        if here["compute_capability"] != built_gpu["compute_capability"]:
            raise ArtifactError(f"{artifact} was built for compute capability {built_gpu['compute_capability']} "
                                f"({built_gpu['name']}), this GPU is {here['compute_capability']} ({here['name']})")
    if meta["backend"] in ("tensorrt", "torch-tensorrt"):
        built, here = meta["versions"].get("tensorrt"), tensorrt_version()
        if here is None:
            raise ArtifactError(f"{artifact} is a TensorRT {built} engine; TensorRT is not installed here")
        if built != here:
            raise ArtifactError(f"{artifact} was built with TensorRT {built}, this machine has TensorRT {here}: "
                                "engines do not carry across versions, rebuild it")
    if meta["backend"] in ("aoti", "torch-tensorrt"):
        built = meta["versions"]["torch"].split("+")[0].rsplit(".", 1)[0]
        here = torch.__version__.split("+")[0].rsplit(".", 1)[0]
        if built != here:
            raise ArtifactError(f"{artifact} is an AOTInductor package from torch {meta['versions']['torch']}, "
                                f"this is torch {torch.__version__}: re-export it with this torch")
