"""Artifact sidecars and contracts: every exported file `X` has `X.json` saying what it is and what it was built
with, and carries its own contract inside (a `.pt2` archive entry, ONNX metadata).

The contract is everything that decides how an artifact is fed and read: task, preset, shape ranges,
normalisation, output names and scales, precision, plugin libraries with their sha256. Loading checks the
sidecar against one schema (mp_deploy/artifact_schema.json, which the C++ library compiles in), against the
file (size, checksum, external data, plugins) and, field by field, against the contract embedded in the
artifact; then against this machine (GPU, TensorRT and torch versions). Any difference is an ArtifactError
that names it. A TensorRT plan cannot hold the contract: its sidecar and checksum bind it, and its I/O
tensor names are checked against the contract when it is loaded.
"""
from __future__ import annotations

import datetime
import json
import math
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mp_deploy import backends, tasks
from mp_deploy.version import __version__
from mp_deploy.backends.tensorrt import tensorrt_version
from mp_deploy.contract import (CONTRACT_ENTRY, CONTRACT_FIELDS, FORMAT, MAX_PIXELS, MAX_SIDECAR_BYTES,  # noqa: F401
                                ONNX_METADATA_KEY, SCHEMA, contract_json, gpu_info)
from mp_deploy.errors import ArtifactError, DataError
from mp_deploy.files import atomic_write, parse_json, read_text, special_kind
from mp_deploy.util import sha256_file


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
    backend: str  # a registered backend's name (mp_deploy.backends): onnx | aoti | tensorrt | torch-tensorrt
    device: str  # cpu | cuda
    precision: str  # fp32 | fp16 | int8
    shapes: dict  # {"batch": [min, opt, max], "height": [...], "width": [...], "multiple_of": m}
    input: dict  # name, layout, dtype, value range, colour order
    output: dict  # name, meaning, unit / scaling
    source: dict  # checkpoint path + sha256, or the seeded default
    plugins: list = field(default_factory=list)  # plugin libraries beside the artifact: {"name", "sha256"}
    versions: dict = field(default_factory=runtime_versions)
    gpu: dict | None = None
    file_sha256: str = ""
    file_bytes: int = 0
    extra_files: list = field(default_factory=list)  # e.g. ONNX external data, checked too
    parity: dict = field(default_factory=dict)  # the measured error against eager fp32 and the rule it met
    measured: dict = field(default_factory=dict)  # machine -> the build's latency there (`--backend auto` on a CPU)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    format: str = FORMAT

    def contract(self) -> dict:
        return contract_of(asdict(self))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=False)  # NaN is not JSON (C++ refuses it)


def contract_of(meta: dict) -> dict:
    """The fields of a sidecar that decide how the artifact is fed and read."""
    return {k: meta[k] for k in CONTRACT_FIELDS}


def sidecar_path(path) -> Path:
    return Path(str(path) + ".json")


def describe_io(task: str, preset: dict, precision: str) -> tuple[dict, dict]:
    """The pre/post-processing contract every backend shares (also read by the C++ library)."""
    dtype = "float16" if precision == "fp16" else "float32"
    inp = {"name": "images", "layout": "NCHW", "dtype": dtype, "color": "RGB", "range": [0.0, 1.0],
           "scale": 1.0 / 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
           "note": "pixels / 255; the model maps [0, 1] to [-1, 1] itself"}
    out = tasks.get(task).describe_output(preset) | {"dtype": dtype}
    return inp, out


# ------------------------------------------------------------------ the schema

def registry_parts() -> dict:
    """What the schema says about tasks and backends, from the registries: the task and backend enums, each
    task's output name, kind and fields, each backend's suffix. The schema file holds the built-in tasks' and
    backends' (the C++ library compiles it in); a test holds the two equal."""
    ts, bs = tasks.all_tasks(), backends.all_backends()
    return {"task_enum": [t.name for t in ts], "preset_task_enum": [t.name for t in ts],
            "backend_enum": [b.name for b in bs],
            "output_name_enum": sorted({t.output_name for t in ts}, key=[t.output_name for t in ts].index),
            "output_kind_enum": sorted({t.output_kind for t in ts}, key=[t.output_kind for t in ts].index),
            "output_names": {t.name: t.output_name for t in ts}, "output_kinds": {t.name: t.output_kind for t in ts},
            "output_fields": {t.name: list(t.output_fields) for t in ts},
            "backend_suffix": {b.name: b.suffix for b in bs}}


def file_parts(node: dict = SCHEMA) -> dict:
    """The same parts as the schema file states them."""
    fields = node["sidecar"]["fields"]
    return {"task_enum": fields["task"]["enum"], "preset_task_enum": fields["preset"]["fields"]["task"]["enum"],
            "backend_enum": fields["backend"]["enum"],
            "output_name_enum": fields["output"]["fields"]["name"]["enum"],
            "output_kind_enum": fields["output"]["fields"]["kind"]["enum"],
            "output_names": node["output_names"], "output_kinds": node["output_kinds"],
            "output_fields": node["output_fields"], "backend_suffix": node["backend_suffix"]}


def schema() -> dict:
    """The schema in force: the file's, with its task and backend parts from the registries (a task or backend
    registered at run time is known to the checks)."""
    s = json.loads(json.dumps(SCHEMA))
    parts, fields = registry_parts(), s["sidecar"]["fields"]
    fields["task"]["enum"], fields["preset"]["fields"]["task"]["enum"] = parts["task_enum"], parts["preset_task_enum"]
    fields["backend"]["enum"] = parts["backend_enum"]
    fields["output"]["fields"]["name"]["enum"] = parts["output_name_enum"]
    fields["output"]["fields"]["kind"]["enum"] = parts["output_kind_enum"]
    s.update({k: parts[k] for k in ("output_names", "output_kinds", "output_fields", "backend_suffix")})
    return s


def check_schema(node: dict, value, where: str) -> None:
    """Raise ArtifactError naming `where` when value does not match the schema node (artifact_schema.json)."""
    if value is None:
        if node.get("nullable"):
            return
        raise ArtifactError(f"{where} must not be null")
    kind = node["type"]
    if kind == "any":
        return
    if kind == "string":
        if not isinstance(value, str):
            raise ArtifactError(f"{where} must be a string, got {type(value).__name__}")
        if "enum" in node and value not in node["enum"]:
            raise ArtifactError(f"{where} is {value!r}, not one of {', '.join(node['enum'])}")
        if "pattern" in node and not re.fullmatch(node["pattern"], value):
            raise ArtifactError(f"{where} {value!r} does not match {node['pattern']}")
    elif kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "integer" and
                                                                                not isinstance(value, int)):
            raise ArtifactError(f"{where} must be {'an integer' if kind == 'integer' else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise ArtifactError(f"{where} must be finite, got {value!r}")
        if ("min" in node and value < node["min"]) or ("max" in node and value > node["max"]):
            raise ArtifactError(f"{where} is {value!r}, outside [{node.get('min', '-inf')}, {node.get('max', 'inf')}]")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ArtifactError(f"{where} must be true or false, got {value!r}")
    elif kind == "array":
        if not isinstance(value, list):
            raise ArtifactError(f"{where} must be a list, got {type(value).__name__}")
        if "length" in node and len(value) != node["length"]:
            raise ArtifactError(f"{where} must have {node['length']} items, got {len(value)}")
        if "max_items" in node and len(value) > node["max_items"]:
            raise ArtifactError(f"{where} has {len(value)} items, at most {node['max_items']} allowed")
        for i, item in enumerate(value):
            check_schema(node["items"], item, f"{where}[{i}]")
    elif kind == "object":
        if not isinstance(value, dict):
            raise ArtifactError(f"{where} must be an object, got {type(value).__name__}")
        missing = [k for k in node.get("required", []) if k not in value]
        if missing:
            raise ArtifactError(f"{where} lacks {', '.join(missing)}")
        fields, additional = node.get("fields", {}), node.get("additional", False)
        for k, v in value.items():
            if k in fields:
                check_schema(fields[k], v, f"{where}.{k}")
            elif additional is False:
                raise ArtifactError(f"{where} has an unknown field {k!r}")
            else:
                check_schema(additional, v, f"{where}.{k}")
    else:  # a schema file this code does not understand
        raise ArtifactError(f"schema node type {kind!r} at {where} is unknown")


def check_consistency(meta: dict, where: str) -> None:
    """What the schema cannot say: fields that must agree with each other."""
    task = meta["task"]
    if task not in tasks.names():
        raise ArtifactError(f"{where}: task {task!r} is not one of {', '.join(tasks.names())}")
    if meta["backend"] not in backends.names():
        raise ArtifactError(f"{where}: backend {meta['backend']!r} is not one of {', '.join(backends.names())}")
    if meta["preset"]["task"] != task:
        raise ArtifactError(f"{where}: preset.task {meta['preset']['task']!r} differs from task {task!r}")
    out, spec = meta["output"], tasks.get(task)
    if out["name"] != spec.output_name or out["kind"] != spec.output_kind:
        raise ArtifactError(f"{where}: output {out['name']!r} ({out['kind']}) is not a {task} output")
    missing = [k for k in spec.output_fields if k not in out]
    if missing:
        raise ArtifactError(f"{where}: a {task} output needs {', '.join(missing)}")
    if meta["device"] == "cuda" and meta["gpu"] is None:
        raise ArtifactError(f"{where}: a cuda artifact must name its gpu")
    lo, hi = meta["input"]["range"]
    if not lo < hi:
        raise ArtifactError(f"{where}: input.range {meta['input']['range']} is empty")
    shapes = meta["shapes"]
    for name in ("batch", "height", "width"):
        lo, opt, hi = shapes[name]
        if not lo <= opt <= hi:
            raise ArtifactError(f"{where}: shapes.{name} {shapes[name]} is not min <= opt <= max")
        if name != "batch" and lo != hi and any(v % shapes["multiple_of"] for v in (lo, opt, hi)):
            raise ArtifactError(f"{where}: dynamic shapes.{name} {shapes[name]} must be multiples of "
                                f"{shapes['multiple_of']}")


def check_sidecar(meta, where: str) -> dict:
    """Schema and consistency of a sidecar read from a file."""
    check_schema(schema()["sidecar"], meta, where)
    check_consistency(meta, where)
    return meta


# ------------------------------------------------------------------ the contract inside the artifact

def embedded_contract(artifact: Path, backend: str) -> dict | None:
    """The contract stored inside the artifact, read by its backend (None for a TensorRT plan, which cannot hold
    one)."""
    try:
        text = backends.get(backend).read_contract(artifact)
        if text is None:
            return None
        contract = parse_json(text, f"the contract inside {artifact}")
    except ArtifactError:
        raise
    except Exception as e:  # a corrupt zip or protobuf, bad JSON inside
        raise ArtifactError(f"cannot read the contract inside {artifact}: {type(e).__name__}: {e}") from e
    if not isinstance(contract, dict) or sorted(contract) != sorted(CONTRACT_FIELDS):
        raise ArtifactError(f"the contract inside {artifact} does not have the fields {', '.join(CONTRACT_FIELDS)}")
    return contract


def compare_contracts(sidecar: dict, embedded: dict, artifact: Path) -> None:
    for name in CONTRACT_FIELDS:
        if json.dumps(sidecar[name], sort_keys=True) != json.dumps(embedded[name], sort_keys=True):
            raise ArtifactError(f"{artifact}: sidecar field {name!r} differs from the contract inside the artifact "
                                f"({json.dumps(sidecar[name])[:120]} vs {json.dumps(embedded[name])[:120]})")


# ------------------------------------------------------------------ writing and reading

def write_sidecar(artifact: Path, sidecar: Sidecar) -> None:
    """Fill in the checksums of the finished artifact (and of its extra files and plugins) and write its sidecar
    atomically."""
    artifact = Path(artifact)
    sidecar.file_sha256 = sha256_file(artifact)
    sidecar.file_bytes = artifact.stat().st_size
    sidecar.extra_files = [{"name": name, "sha256": sha256_file(artifact.parent / name),
                            "bytes": (artifact.parent / name).stat().st_size}
                           for name in (f["name"] if isinstance(f, dict) else f for f in sidecar.extra_files)]
    text = sidecar.to_json()
    check_sidecar(json.loads(text), sidecar_path(artifact).name)  # never write what loading would refuse
    atomic_write(sidecar_path(artifact), lambda tmp: Path(tmp).write_text(text))


def _read_json(side: Path):
    try:
        return parse_json(read_text(side, MAX_SIDECAR_BYTES), f"sidecar {side}")
    except DataError as e:
        raise ArtifactError(str(e)) from None


def _regular(path: Path, what: str) -> None:
    """ArtifactError unless `path` is a regular file (a FIFO would block the checksum's read)."""
    found = special_kind(path)
    if found == "missing":
        raise ArtifactError(f"{path} ({what}) is missing")
    if found is not None:
        raise ArtifactError(f"{path} ({what}) is not a regular file ({found})")


def _check_file(path: Path, sha256: str, size: int | None, what: str) -> None:
    _regular(path, what)
    if size is not None and path.stat().st_size != size:
        raise ArtifactError(f"{path} ({what}) is {path.stat().st_size} bytes, sidecar says {size}: truncated or "
                            "replaced")
    if sha256_file(path) != sha256:
        raise ArtifactError(f"{path} ({what}) does not match the checksum in its sidecar: corrupted or replaced")


def read_sidecar(artifact, check_machine: bool = True) -> dict:
    """Read and verify the sidecar of `artifact`; raise ArtifactError saying what differs."""
    artifact = Path(artifact)
    if special_kind(artifact) == "missing":
        raise ArtifactError(f"artifact not found: {artifact}")
    _regular(artifact, "the artifact")
    side = sidecar_path(artifact)
    if special_kind(side) == "missing":
        raise ArtifactError(f"{artifact} has no sidecar {side.name}: re-export it with `mp-deploy build`")
    meta = _read_json(side)
    if isinstance(meta, dict) and meta.get("format") != FORMAT:
        raise ArtifactError(f"sidecar {side} has format {meta.get('format')!r}, expected {FORMAT!r}: re-export it "
                            "with `mp-deploy build`")
    check_sidecar(meta, f"sidecar {side.name}")
    suffix = backends.get(meta["backend"]).suffix
    if not artifact.name.endswith(suffix):
        raise ArtifactError(f"{artifact.name}: sidecar says backend {meta['backend']!r} ({suffix}), file is "
                            f"{artifact.suffix}")
    _check_file(artifact, meta["file_sha256"], meta["file_bytes"], "the artifact")
    for extra in meta["extra_files"]:  # names are plain file names (schema): always beside the artifact
        _check_file(artifact.parent / extra["name"], extra["sha256"], extra["bytes"], f"external data of {artifact.name}")
    for plugin in meta["plugins"]:
        _check_file(artifact.parent / plugin["name"], plugin["sha256"], None, f"plugin library of {artifact.name}")
    embedded = embedded_contract(artifact, meta["backend"])
    if embedded is not None:
        check_schema({"type": "object", "fields": schema()["sidecar"]["fields"], "additional": False}, embedded,
                     f"contract inside {artifact.name}")
        compare_contracts(meta, embedded, artifact)
    if check_machine:
        check_machine_matches(meta, artifact)
    return meta


def check_machine_matches(meta: dict, artifact) -> None:
    """ArtifactError when this machine cannot run the artifact: a CUDA artifact needs a CUDA device of its
    compute capability; then its backend's own checks (versions, GPU model)."""
    built_gpu = meta.get("gpu")
    if meta["device"] == "cuda":
        here = gpu_info()
        if here is None:
            raise ArtifactError(f"{artifact} was built for CUDA ({built_gpu and built_gpu['name']}); "
                                "this machine has no CUDA device")
        if here["compute_capability"] != built_gpu["compute_capability"]:
            raise ArtifactError(f"{artifact} was built for compute capability {built_gpu['compute_capability']} "
                                f"({built_gpu['name']}), this GPU is {here['compute_capability']} ({here['name']})")
    backends.get(meta["backend"]).check_machine(meta, artifact)
