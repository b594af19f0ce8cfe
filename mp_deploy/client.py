"""Call a served model like a local engine: `infer(url, model, images)` returns what `Engine.run(images)` returns
(a dict of torch tensors: depth; logits and labels; heatmaps and keypoints), computed by a Triton server
(`mp-deploy serve`, or NVIDIA's Triton on a `mp-deploy triton-repo` repository).

    from mp_deploy.client import Client, infer
    out = infer("http://localhost:8000", "depth-nyu", rgb_uint8_hwc)       # one call, one connection
    with Client("grpc://localhost:8001") as c:                             # many calls, one connection
        out = c.infer("depth-nyu", batch_uint8_bhwc)

URLs: http://HOST:PORT or grpc://HOST:PORT (a bare HOST:PORT is HTTP). The server takes uint8 (N, H, W, 3);
float (N, 3, H, W) images in [0, 1] are rounded to 8 bits first (at most half a grey level per pixel). A request
the server refuses (dtype, shape, batch size) raises EngineError, as the local engine does; an unreachable or
failing server raises ServerError.
"""
from __future__ import annotations

import numpy as np
import torch

from mp_deploy.engine import EngineError, as_tensor, image_layout
from mp_deploy.errors import MpDeployError, UsageError

INPUT = "images"
SCHEMES = ("http", "grpc")


class ServerError(MpDeployError):
    """The server is unreachable, not ready, or failed while running a request."""


def split_url(url: str) -> tuple[str, str]:
    """'grpc://host:8001' -> ('grpc', 'host:8001'); a bare 'host:port' is HTTP."""
    scheme, sep, address = url.partition("://")
    if not sep:
        scheme, address = "http", url
    if scheme not in SCHEMES or not address or "/" in address.rstrip("/"):
        raise UsageError(f"server URL {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    return scheme, address.rstrip("/")


def as_uint8_nhwc(images) -> np.ndarray:
    """The server's input: uint8 (N, H, W, 3), after the same layout checks as Engine (EngineError)."""
    b, h, w, channels_last = image_layout(images)
    x = as_tensor(images)
    if channels_last:
        return x.reshape(b, h, w, 3).cpu().numpy()
    x = x.reshape(b, 3, h, w).float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise EngineError("floating-point images must be finite and in [0, 1] (a server takes 8-bit images)")
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Client:
    """One connection to a Triton server (HTTP or gRPC, from the URL); thread-safe for gRPC only, so give each
    thread its own Client over HTTP."""

    def __init__(self, url: str, timeout_s: float = 60.0):
        self.url = url
        self.scheme, address = split_url(url)
        try:
            if self.scheme == "http":
                import tritonclient.http as triton
            else:
                import tritonclient.grpc as triton
        except ImportError as e:
            raise UsageError(f"the Triton client is not installed ({e}): pip install 'mp-deploy[client]'") from None
        self.triton, self.timeout_s = triton, timeout_s
        kw = {"connection_timeout": timeout_s, "network_timeout": timeout_s} if self.scheme == "http" else {}
        self.client = triton.InferenceServerClient(address, **kw)
        self._info = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.client.close()

    def ready(self, model: str | None = None) -> bool:
        """Whether the server (and `model`, if given) is ready; False when it cannot be reached."""
        try:
            return self.client.is_server_ready() and (model is None or self.client.is_model_ready(model))
        except Exception:  # refused connection, reset, timeout: not ready (yet)
            return False

    def model_info(self, model: str) -> dict:
        """What a served model takes and returns: {"height", "width" (None where it takes a range), "max_batch",
        "outputs"}, to fit images to before calling infer."""
        if model not in self._info:
            kw = {"as_json": True} if self.scheme == "grpc" else {}
            meta = self._call(model, lambda: self.client.get_model_metadata(model, **kw))
            config = self._call(model, lambda: self.client.get_model_config(model, **kw))
            config = config.get("config", config)  # gRPC wraps it
            _, h, w, _ = (int(d) for d in meta["inputs"][0]["shape"])  # gRPC gives int64 as strings
            self._info[model] = {"height": h if h > 0 else None, "width": w if w > 0 else None,
                                 "max_batch": int(config.get("max_batch_size", 0)),
                                 "outputs": [o["name"] for o in meta["outputs"]]}
        return self._info[model]

    def infer(self, model: str, images) -> dict[str, torch.Tensor]:
        """images -> the model's outputs, as Engine.run returns them (torch tensors on the CPU)."""
        x = as_uint8_nhwc(images)
        names = self.model_info(model)["outputs"]
        inp = self.triton.InferInput(INPUT, list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        outputs = [self.triton.InferRequestedOutput(n) for n in names]
        timeout = {"client_timeout": self.timeout_s} if self.scheme == "grpc" else {}  # HTTP: set per connection
        result = self._call(model, lambda: self.client.infer(model, [inp], outputs=outputs, **timeout))
        return {n: torch.from_numpy(np.array(result.as_numpy(n))) for n in names}

    def _call(self, model: str, fn):
        from tritonclient.utils import InferenceServerException

        try:
            return fn()
        except InferenceServerException as e:
            status = str(e.status() or "")
            message = next(iter((e.message() or str(e)).strip().splitlines()), "no message")  # Triton's first line
            if "unknown model" in message or status.endswith("NOT_FOUND") or status == "404":
                raise UsageError(f"{self.url} serves no model {model!r} ({message})") from None
            if status.startswith("4") or status.endswith("INVALID_ARGUMENT"):
                raise EngineError(f"{model} on {self.url} refused the images: {message}") from None
            raise ServerError(f"{model} on {self.url}: {message}") from None
        except (ConnectionError, OSError) as e:
            raise ServerError(f"{self.url} cannot be reached: {e}") from None


def infer(url: str, model: str, images) -> dict[str, torch.Tensor]:
    """One request: images -> what Engine.run returns, computed by `model` on the Triton server at `url`."""
    with Client(url) as client:
        return client.infer(model, images)
