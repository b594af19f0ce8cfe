"""OpenVINO IR (`.xml` + its weights `.bin`) converted from our ONNX artifact, run by OpenVINO's CPU plugin; the
contract in the IR's rt_info (`<rt_info><mp_deploy_contract value="..."/>`).

Why an artifact of its own rather than OpenVINO running the `.onnx`: a sidecar names one backend, and everything
that picks or loads an artifact (Engine.load, predict's --engine DIR, bench's rows, serve) goes by that name; an
IR with its own sidecar is found, checked (its parity record is measured on what OpenVINO runs) and loaded like
every other artifact, with no rule anywhere else that an ONNX file may also mean OpenVINO. The price is a second
copy of the weights (fp32: `ov.save_model(compress_to_fp16=False)`; the default would round them to fp16).
Loading an IR takes as long as loading the ONNX (read ~0.8 s, compile ~7 s for the tiny depth model on 2 cores);
OpenVINO's own compiled-model cache (CACHE_DIR, under the mp-deploy cache folder) cuts repeated loads to ~2 s.

The build converts the ONNX artifact of the same network (`reads = "onnx"`: build makes or reuses it first), so
both run the same graph. OpenVINO is optional (`pip install 'mp-deploy[openvino]'`): `available` says why not.
CPU threads follow mp_deploy.cpu_threads (`openvino_config`: latency mode, not pinned to cores).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch

from mp_deploy.backends.base import Backend, BuildOptions, Product, no_contract
from mp_deploy.contract import ONNX_METADATA_KEY, contract_json
from mp_deploy.errors import ArtifactError, BuildError

CONTRACT_KEY = ONNX_METADATA_KEY  # a top-level rt_info entry of the IR
FRAMEWORK_KEY = "framework"  # where read_model puts the ONNX file's metadata (the ONNX artifact's own contract)


def openvino_module():
    """The openvino package, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def cache_dir() -> Path | None:
    """OpenVINO's compiled-model cache: $MP_DEPLOY_CACHE/openvino, else $XDG_CACHE_HOME/mp-deploy/openvino, else
    ~/.cache/mp-deploy/openvino; None when it cannot be written (loads then compile every time). The cache is
    keyed by the model's content, the properties, the CPU and OpenVINO's version: it is not part of an artifact."""
    from mp_deploy.util import writable_folder

    root = os.environ.get("MP_DEPLOY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() \
        / "mp-deploy"
    try:
        return writable_folder(Path(root) / "openvino")
    except (ValueError, OSError):
        return None


def read_ir(core, path: Path):
    """The IR at `path` (its weights: the .bin of the same stem beside it)."""
    weights = Path(path).with_suffix(".bin")
    return core.read_model(str(path), str(weights))


def convert_onnx(source: Path, path: Path, contract: dict) -> list[str]:
    """The ONNX model `source` as an fp32 IR at `path` (+ its .bin) with `contract` in its rt_info, atomically ->
    the extra files written beside it (the .bin)."""
    ov = openvino_module()
    path = Path(path)
    if not path.name.endswith(".xml"):
        raise BuildError(f"an OpenVINO IR is named *.xml, not {path.name}")
    model = ov.Core().read_model(str(source))
    info = model.get_rt_info()
    if FRAMEWORK_KEY in info.keys():  # the ONNX file's metadata, with the ONNX artifact's contract: not this one's
        del info[FRAMEWORK_KEY]
    model.set_rt_info(contract_json(contract), [CONTRACT_KEY])
    weights = path.with_suffix(".bin").name
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        ov.save_model(model, str(Path(tmp) / path.name), compress_to_fp16=False)
        shutil.move(str(Path(tmp) / weights), str(path.parent / weights))  # weights first: a visible .xml has them
        shutil.move(str(Path(tmp) / path.name), str(path))
    return [weights]


def read_ir_contract(path: Path) -> str | None:
    """The contract's JSON text in an IR's rt_info, None when it holds none."""
    ov = openvino_module()
    if ov is None:
        raise ArtifactError(f"{path} is an OpenVINO IR and the openvino package is not installed "
                            "(pip install 'mp-deploy[openvino]')")
    model = read_ir(ov.Core(), path)
    if not model.has_rt_info([CONTRACT_KEY]):
        return None
    return model.get_rt_info([CONTRACT_KEY]).astype(str)


class OpenVINORunner:
    """A model compiled for OpenVINO's CPU plugin on `threads` threads (mp_deploy.cpu_threads.openvino_config). One
    infer request, behind a lock: a request runs one inference at a time."""

    def __init__(self, path: Path, threads: int = 1):
        from mp_deploy.cpu_threads import openvino_config

        ov = openvino_module()
        if ov is None:
            raise ArtifactError(f"cannot load {path}: the openvino package is not installed "
                                "(pip install 'mp-deploy[openvino]')")
        core = ov.Core()
        cache = cache_dir()
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})
        try:
            compiled = core.compile_model(read_ir(core, path), "CPU", openvino_config(threads))
        except Exception as e:  # a corrupt IR, weights that do not match it
            raise ArtifactError(f"cannot load OpenVINO model {path}: {e}") from e
        self.request = compiled.create_infer_request()
        self.lock = threading.Lock()

    def __call__(self, x):
        with self.lock:
            out = self.request.infer({0: x.detach().cpu().numpy()})  # outputs are copies (share_outputs off)
        return torch.from_numpy(out[0])


class OpenVINOBackend(Backend):
    name, label, suffix = "openvino", "OpenVINO", ".xml"
    artifact_devices = ("cpu",)
    gpu_rank = 4  # after ONNX: --backend auto on a GPU machine never prefers a CPU-only runtime
    auto = ""  # `build --backend auto` leaves it out: it ran slower than ONNX Runtime on the AVX2 machine measured
    precisions = ("fp32",)  # int8 through OpenVINO was not faster than its fp32 there either (issue #24)
    reads = "onnx"
    triton_network = None  # triton-repo: our Engine in Triton's Python backend (Triton's OpenVINO backend: untested)
    bench_note = "includes numpy input/output copies"

    def available(self, device):
        if device != "cpu":
            return False, "OpenVINO artifacts run on the CPU here (its GPU plugin is for Intel GPUs)"
        if openvino_module() is None:
            return False, "the openvino package is not installed (pip install 'mp-deploy[openvino]')"
        from mp_deploy.backends.onnx import ONNXBackend

        return ONNXBackend().available(device)  # it converts the ONNX artifact

    def runs_on(self, device):
        if device != "cpu":
            return False, "OpenVINO artifacts run on the CPU here (its GPU plugin is for Intel GPUs)"
        if openvino_module() is None:
            return False, "the openvino package is not installed (pip install 'mp-deploy[openvino]')"
        return True, ""

    def write(self, product: Product, network, path: Path, options: BuildOptions, contract: dict) -> list[str]:
        if options.source is None:
            raise BuildError(f"{path.name}: OpenVINO converts the ONNX artifact, and none was given")
        return convert_onnx(options.source, path, contract)

    def read_contract(self, path):
        text = read_ir_contract(path)
        if text is None:
            raise no_contract(path, f"rt_info {CONTRACT_KEY!r}")
        return text

    def load(self, path, meta, device, threads=1):
        if device != "cpu":
            raise ArtifactError(f"{path} is an OpenVINO artifact: it runs on the CPU, not {device}")
        return OpenVINORunner(path, threads)
