"""A Triton Python-backend model of mp-deploy: `mp-deploy triton-repo` copies this file into a model repository as
`<model>/1/model.py`; it runs inside Triton's Python backend, which must be able to import mp_deploy (README).

Its role comes from the config's parameters:
  engine  uint8 images -> the task's outputs: our Engine on the artifact beside this file (`.pt2` packages, or any
          artifact with --python-backend);
  pre     uint8 images -> the network's input (Engine.preprocess: the contract's scale, mean, std, colour order);
  post    the network's raw output -> the task's outputs (Engine.postprocess),
pre and post around an onnxruntime or TensorRT model in an ensemble. Requests Engine refuses get an INVALID_ARG
error (HTTP 400, gRPC INVALID_ARGUMENT) each, and the other requests of their batch still run.
"""
import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from mp_deploy.artifacts import check_sidecar
from mp_deploy.engine import Engine, EngineError
from mp_deploy.serve.spec import ARTIFACT, PIXELS, ROLE, SIDECAR


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        self.role = params[ROLE]
        if self.role == "engine":
            self.engine = Engine.load(here / params[ARTIFACT])  # verifies the sidecar and checksums
        else:  # pre / post: the contract alone, no network
            meta = check_sidecar(json.loads((here / params[SIDECAR]).read_text()), params[SIDECAR])
            self.engine = Engine(None, meta, "cpu", params[SIDECAR])
        self.input = config["input"][0]["name"]
        self.outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        if len(arrays) > 1 and len({(a.dtype, a.shape[1:]) for a in arrays}) == 1:
            try:  # one call for the whole dynamic batch
                out = self.run(np.concatenate(arrays))
                ends = np.cumsum([len(a) for a in arrays])
                return [self.response({k: v[e - len(a):e] for k, v in out.items()}) for a, e in zip(arrays, ends)]
            except EngineError:
                pass  # answered one by one below, so that only the refused requests fail
        return [self.answer(a) for a in arrays]

    def answer(self, x):
        try:
            return self.response(self.run(x))
        except EngineError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))

    def response(self, out: dict):
        return pb_utils.InferenceResponse([pb_utils.Tensor(k, np.ascontiguousarray(out[k].cpu().numpy(), dtype))
                                           for k, dtype in self.outputs.items()])

    def run(self, x: np.ndarray) -> dict:
        if self.role == "engine":
            return self.engine.run(x)
        if self.role == "pre":
            return {PIXELS: self.engine.preprocess(x)}
        raw, stride = torch.from_numpy(x), self.engine.meta["output"]["stride"]
        return self.engine.postprocess(raw, (raw.shape[-2] * stride, raw.shape[-1] * stride))
