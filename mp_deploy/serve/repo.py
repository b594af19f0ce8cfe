"""`mp-deploy triton-repo`: a Triton model repository of artifacts, for NVIDIA's Triton container on GPU machines and
clusters (README there: the docker command, a Dockerfile and a Kubernetes Deployment).

    mp-deploy triton-repo --engine depth-nyu-sd15-fp16.engine --engine seg-ade20k-sd15-fp16.onnx --output triton/

Clients call one model per artifact, `<task>-<preset>`: uint8 images (N, H, W, 3) in, the task's outputs out (the
same tensors as `mp-deploy serve`). Behind it:
  .onnx    an ensemble <name>-pre (Python) -> <name>-net (onnxruntime backend) -> <name>-post (Python);
  .engine  the same with <name>-net a TensorRT plan, its plugin libraries beside it;
  .pt2     one Python-backend model running our Engine (pre- and post-processing inside);
and with --python-backend every artifact becomes such a Python model (what PyTriton's bundled tritonserver can
run: `mp-deploy serve --repository`). Each config.pbtxt is Triton's ModelConfig protobuf (from tritonclient)
in text format. The output folder is written under a temporary name and renamed once complete.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from mp_deploy import backends, cli
from mp_deploy.artifacts import sidecar_path
from mp_deploy.errors import UsageError
from mp_deploy.serve.spec import ARTIFACT, INPUT, PIXELS, RAW, ROLE, SIDECAR, ModelSpec, TensorSpec, describe

KINDS = ("auto", "gpu", "cpu")
MODEL_PY = Path(__file__).with_name("triton_model.py")  # every Python model's model.py
TRITON_TAG = "24.10-py3"  # the tritonserver release of PyTriton 0.7's bundled server (2.51)


def model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise UsageError(f"triton-repo writes Triton's ModelConfig protobuf from tritonclient ({e}): "
                         "pip install 'mp-deploy[client]'") from None
    return model_config_pb2


# ------------------------------------------------------------------ configs (pure: from the sidecar)

def _dtype(pb, t: TensorSpec):
    from tritonclient.utils import np_to_triton_dtype

    return pb.DataType.Value("TYPE_" + np_to_triton_dtype(t.dtype))


def _tensors(pb, cls, tensors: list[TensorSpec]):
    return [cls(name=t.name, data_type=_dtype(pb, t), dims=list(t.dims)) for t in tensors]


def _config(pb, name: str, spec: ModelSpec, inputs, outputs, kind: str, instances: int, **fields):
    """A model with dynamic batching, `instances` instances of `kind`, warmed up on zeros at every batch size
    dynamic batching can form before it is ready (a Python model receives a warm-up of batch b as b requests and
    runs them as one batch). inputs: (dims as served, dims at the opt size) per tensor."""
    warmup = [pb.ModelWarmup(name=f"zeros-batch-{b}", batch_size=b, inputs={
        t.name: pb.ModelWarmup.Input(data_type=_dtype(pb, t), dims=list(t.dims), zero_data=True) for _, t in inputs})
        for b in range(1, spec.max_batch + 1)]
    return pb.ModelConfig(name=name, max_batch_size=spec.max_batch,
                          input=_tensors(pb, pb.ModelInput, [t for t, _ in inputs]),
                          output=_tensors(pb, pb.ModelOutput, outputs), dynamic_batching=pb.ModelDynamicBatching(),
                          instance_group=[pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.Kind.Value(f"KIND_{kind}"),
                                                                count=instances)],
                          model_warmup=warmup, **fields)


def _python(pb, role: str, name, spec, inputs, outputs, kind, instances, **params):
    params = {ROLE: role, **params}
    return _config(pb, name, spec, inputs, outputs, kind, instances, backend="python",
                   parameters={k: pb.ModelParameter(string_value=v) for k, v in params.items()})


def network_kind(meta: dict, requested: str) -> str:
    """GPU or CPU instances for the network: a TensorRT plan or CUDA package needs a GPU; ONNX runs on the GPU of a
    cluster unless --instance-kind cpu."""
    gpu_only = backends.get(meta["backend"]).gpu_only or meta["device"] == "cuda"
    if requested == "cpu" and gpu_only:
        raise UsageError(f"--instance-kind cpu: a {meta['backend']} {meta['device']} artifact runs on a GPU")
    if requested != "auto":
        return requested.upper()
    return backends.get(meta["backend"]).triton_instance  # ONNX, TensorRT: a cluster's GPU unless --instance-kind cpu


def model_configs(spec: ModelSpec, python_backend: bool = False, kind: str = "auto", instances: int = 1) -> dict:
    """model name -> ModelConfig message for one artifact (see the module's docstring)."""
    pb = model_config_pb2()
    meta, artifact = spec.meta, spec.path.name
    images = list(zip(spec.inputs(), spec.inputs(at=1)))
    network_backend = backends.get(meta["backend"]).triton_network  # None: Triton has no backend for the format
    if python_backend or network_backend is None:
        engine_kind = "GPU" if meta["device"] == "cuda" else "CPU"  # our Engine runs where the artifact was built for
        return {spec.name: _python(pb, "engine", spec.name, spec, images, spec.outputs(), engine_kind, instances,
                                   **{ARTIFACT: artifact})}
    (net_in, net_out), (opt_in, opt_out) = spec.network(), spec.network(at=1)
    pixels = TensorSpec(PIXELS, net_in.dtype, net_in.dims)
    raw, opt_raw = (TensorSpec(RAW, t.dtype, t.dims) for t in (net_out, opt_out))
    pre, net, post = f"{spec.name}-pre", f"{spec.name}-net", f"{spec.name}-post"
    sidecar = {SIDECAR: sidecar_path(artifact).name}
    backend = dict(network_backend)
    step = pb.ModelEnsembling.Step
    return {
        pre: _python(pb, "pre", pre, spec, images, [pixels], "CPU", instances, **sidecar),
        net: _config(pb, net, spec, [(net_in, opt_in)], [net_out], network_kind(meta, kind), instances,
                     default_model_filename=artifact, **backend),
        post: _python(pb, "post", post, spec, [(raw, opt_raw)], spec.outputs(), "CPU", instances, **sidecar),
        spec.name: pb.ModelConfig(
            name=spec.name, platform="ensemble", max_batch_size=spec.max_batch,
            input=_tensors(pb, pb.ModelInput, spec.inputs()), output=_tensors(pb, pb.ModelOutput, spec.outputs()),
            ensemble_scheduling=pb.ModelEnsembling(step=[
                step(model_name=pre, model_version=-1, input_map={INPUT: INPUT}, output_map={PIXELS: PIXELS}),
                step(model_name=net, model_version=-1, input_map={net_in.name: PIXELS},
                     output_map={net_out.name: RAW}),
                step(model_name=post, model_version=-1, input_map={RAW: RAW},
                     output_map={t.name: t.name for t in spec.outputs()})])),
    }


# ------------------------------------------------------------------ files

def artifact_files(spec: ModelSpec) -> list[Path]:
    """The artifact, its sidecar, external data and plugin libraries: all beside it, all needed to load it."""
    folder, meta = spec.path.parent, spec.meta
    names = [spec.path.name, sidecar_path(spec.path).name] + [f["name"] for f in meta["extra_files"]] + \
        [p["name"] for p in meta["plugins"]]
    return [folder / n for n in names]


def model_files(spec: ModelSpec, config) -> dict[str, Path]:
    """The files of one model's version folder: name there -> source."""
    if config.platform == "ensemble":
        return {}
    if config.backend != "python":
        return {f.name: f for f in artifact_files(spec)}
    own = artifact_files(spec) if config.parameters[ROLE].string_value == "engine" \
        else [sidecar_path(spec.path)]
    return {"model.py": MODEL_PY, **{f.name: f for f in own}}


def write_model(root: Path, config, files: dict[str, Path]) -> None:
    from google.protobuf import text_format

    version = root / config.name / "1"  # an ensemble needs its (empty) version folder too
    version.mkdir(parents=True)
    (root / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    for name, source in files.items():
        try:
            os.link(source, version / name)  # artifacts can be GBs: a hard link where the file system allows
        except OSError:
            shutil.copyfile(source, version / name)


def write_repository(paths, out, python_backend: bool = False, kind: str = "auto", instances: int = 1,
                     force: bool = False, log=print) -> Path:
    """Write the repository for `paths` to out/models, with README.md, Dockerfile and deployment.yaml -> out."""
    from mp_deploy.serve.guide import texts

    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out} exists: --force replaces it")
    specs = describe(paths, check_machine=False)  # the repository runs elsewhere (another GPU, TensorRT)
    configs = {spec.name: model_configs(spec, python_backend, kind, instances) for spec in specs}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp."))
    try:
        for spec in specs:
            for config in configs[spec.name].values():
                write_model(tmp / "models", config, model_files(spec, config))
        for name, text in texts(specs, configs, TRITON_TAG).items():
            (tmp / name).write_text(text)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for spec in specs:
        behind = [n for n in configs[spec.name] if n != spec.name]
        log(f"{spec.name}: {' -> '.join(behind) if behind else 'one Python-backend model'} ({spec.path.name})")
    log(f"wrote {out}/models ({sum(map(len, configs.values()))} models), README.md, Dockerfile, deployment.yaml")
    return out


# ------------------------------------------------------------------ command line

def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--engine", action="append", required=True, metavar="FILE",
                    help="an artifact of `mp-deploy build` (repeat for several)")
    cli.add_output(ap, "output folder: models/ (the repository), README.md, Dockerfile, deployment.yaml (required)",
                   deprecated=("--out",))
    ap.add_argument("--python-backend", action="store_true",
                    help="every artifact as one Python-backend model running our Engine (no onnxruntime or TensorRT "
                         "backend needed: PyTriton's bundled tritonserver, `mp-deploy serve --repository`)")
    ap.add_argument("--instance-kind", choices=KINDS, default="auto",
                    help="where the onnxruntime/TensorRT network models run (auto: gpu); Python models run where "
                         "their artifact was built for")
    ap.add_argument("--instances", type=cli.positive_int, default=1, help="instances of each model (default 1)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    if args.output is None:
        raise UsageError("--output DIR is required: the folder the repository is written to")
    write_repository(args.engine, args.output, args.python_backend, args.instance_kind, args.instances, args.force,
                     log=lambda msg: print(msg, flush=True))
    return 0
