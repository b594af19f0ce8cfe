"""How to run a repository of `mp-deploy triton-repo`: its README.md, a Dockerfile (NVIDIA's tritonserver image
plus mp_deploy for the Python models) and a Kubernetes Deployment and Service (deployment.yaml)."""
from __future__ import annotations

IMAGE = "mp-deploy-triton"  # the image the Dockerfile builds


def server_args(specs, configs) -> list[str]:
    """tritonserver's arguments: the repository, and the TensorRT plugin libraries the plans need."""
    plugins = [f"/models/{spec.name}-net/1/{p['name']}" for spec in specs if f"{spec.name}-net" in configs[spec.name]
               and configs[spec.name][f"{spec.name}-net"].platform == "tensorrt_plan" for p in spec.meta["plugins"]]
    return ["--model-repository=/models"] + ([f"--backend-config=tensorrt,plugins={';'.join(plugins)}"]
                                             if plugins else [])


def texts(specs, configs, tag: str) -> dict[str, str]:
    args = server_args(specs, configs)
    return {"README.md": readme(specs, configs, tag, args), "Dockerfile": dockerfile(tag),
            "deployment.yaml": deployment(args)}


def readme(specs, configs, tag: str, args: list[str]) -> str:
    rows = []
    for spec in specs:
        behind = [f"`{n}` ({c.platform or c.backend})" for n, c in configs[spec.name].items() if n != spec.name]
        rows.append(f"| `{spec.name}` | `{spec.path.name}` | {spec.max_batch} | "
                    f"{', '.join(t.name for t in spec.outputs())} | {' -> '.join(behind) or 'Python backend'} |")
    plans = [s.meta for s in specs if any(c.platform == "tensorrt_plan" for c in configs[s.name].values())]
    built = lambda key: ", ".join(sorted({str(key(m)) for m in plans}))  # noqa: E731
    trt_note = (f"\nThe TensorRT plans were built with TensorRT {built(lambda m: m['versions'].get('tensorrt'))} on "
                f"{built(lambda m: m['gpu']['name'])}: pick the tritonserver release that ships that TensorRT "
                "version (NVIDIA's framework support matrix) and run it on that GPU model; plans do not carry across "
                "versions or GPUs.\n") if plans else ""
    command = " \\\n    ".join(["docker run --rm --gpus all --shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002",
                                 '-v "$PWD/models:/models"', f"{IMAGE} tritonserver {' '.join(args)}"])
    return f"""# Triton model repository (written by `mp-deploy triton-repo`)

`models/` is the model repository. Clients call one model per artifact: uint8 images `images` (N, H, W, 3) in,
the task's outputs out (the arrays of `Engine.run`). Models behind it are an ensemble's steps.

| model | artifact | max batch | outputs | runs on |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

## Run it

The Python models (pre- and post-processing, `.pt2` engines) import `mp_deploy`: build the image of the
Dockerfile here once (NVIDIA's `nvcr.io/nvidia/tritonserver:{tag}` plus a wheel of mp-deploy, `pip wheel --no-deps
.` in its checkout, copied into `wheels/`), then:

```bash
docker build -t {IMAGE} .
{command}
curl -sf localhost:8000/v2/health/ready && echo ready
```
{trt_note}
Call it from Python (`pip install 'mp-deploy[client]'`):

```python
from mp_deploy.client import infer
out = infer("http://localhost:8000", "{specs[0].name}", images)   # or grpc://localhost:8001
```

## Kubernetes

`deployment.yaml` runs the image as a Deployment with liveness (`/v2/health/live`) and readiness
(`/v2/health/ready`) probes, one GPU per replica, the repository mounted at `/models` from a volume (a
PersistentVolumeClaim named `mp-deploy-models` holding this `models/` folder; `--model-repository` also takes
`s3://`, `gs://` and `as://` URLs), and a Service for HTTP 8000, gRPC 8001 and Prometheus metrics 8002:

```bash
kubectl apply -f deployment.yaml
```
"""


def dockerfile(tag: str) -> str:
    return f"""# NVIDIA's Triton with mp_deploy for the Python models (pre/post-processing, .pt2 engines)
FROM nvcr.io/nvidia/tritonserver:{tag}
COPY wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/*.whl onnx onnxruntime && rm -rf /tmp/wheels
"""


def deployment(args: list[str]) -> str:
    arg_lines = "".join(f'\n            - "{a}"' for a in args)
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: mp-deploy-triton
  labels: {{app: mp-deploy-triton}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: mp-deploy-triton}}
  template:
    metadata:
      labels: {{app: mp-deploy-triton}}
    spec:
      containers:
        - name: tritonserver
          image: {IMAGE}
          command: ["tritonserver"]
          args:{arg_lines}
          ports:
            - {{name: http, containerPort: 8000}}
            - {{name: grpc, containerPort: 8001}}
            - {{name: metrics, containerPort: 8002}}
          livenessProbe:
            httpGet: {{path: /v2/health/live, port: http}}
          readinessProbe:
            httpGet: {{path: /v2/health/ready, port: http}}
            periodSeconds: 5
          resources:
            limits: {{nvidia.com/gpu: 1}}
          volumeMounts:
            - {{name: models, mountPath: /models}}
            - {{name: shm, mountPath: /dev/shm}}
      volumes:
        - name: models
          persistentVolumeClaim: {{claimName: mp-deploy-models}}
        - name: shm  # the Python backend exchanges tensors through shared memory
          emptyDir: {{medium: Memory, sizeLimit: 1Gi}}
---
apiVersion: v1
kind: Service
metadata:
  name: mp-deploy-triton
spec:
  selector: {{app: mp-deploy-triton}}
  ports:
    - {{name: http, port: 8000}}
    - {{name: grpc, port: 8001}}
    - {{name: metrics, port: 8002}}
"""
