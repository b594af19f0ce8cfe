"""What an inference request to `mp-deploy serve` may be, checked before tritonserver sees it (mp_deploy.serve.front):
the declared shape against the model (rank, batch range, each side within the artifact's range and a multiple of
its step where the range is dynamic, at most MAX_PIXELS pixels per image), the datatype, the number of values or
bytes against that shape, the uint8 values in 0..255, the body size. tritonserver 2.51 allocates a JSON request's
declared shape before checking it (a 200-byte request declaring 10^10 pixels aborts it), reports malformed JSON as
an internal error and wraps uint8 values modulo 256: none of that reaches it. A refusal is a BadRequest naming the
rule, answered as HTTP 400 (413 for the size, 404 for an unknown model) or gRPC INVALID_ARGUMENT (NOT_FOUND).
Nothing here allocates more than the request's own bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from mp_deploy.contract import MAX_PIXELS

JSON_BYTES_PER_VALUE = 4  # "255," : the most a uint8 value takes in a JSON request
HEADER_SLACK = 64 << 10  # a JSON header's own fields, beyond the values


class BadRequest(Exception):
    """A request the server refuses: `status` its HTTP status (400, 404, 413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputRule:
    """One model's image input: uint8 (N, H, W, 3), N in 1..max_batch, H and W within [lo, hi] (multiples of
    `multiple_of` where lo < hi)."""

    model: str
    name: str
    max_batch: int
    height: tuple[int, int]
    width: tuple[int, int]
    multiple_of: int = 1
    datatype: str = "UINT8"
    channels: int = 3

    @classmethod
    def of(cls, spec) -> "InputRule":
        """The rule of a served artifact (mp_deploy.serve.spec.ModelSpec)."""
        s = spec.meta["shapes"]
        return cls(spec.name, spec.inputs()[0].name, spec.max_batch, (s["height"][0], s["height"][2]),
                   (s["width"][0], s["width"][2]), s.get("multiple_of", 1))

    def dims(self) -> str:
        side = lambda r: str(r[0]) if r[0] == r[1] else f"{r[0]}..{r[1]}"  # noqa: E731
        return f"(N <= {self.max_batch}, {side(self.height)}, {side(self.width)}, {self.channels})"

    def max_bytes(self, json_body: bool = True) -> int:
        """The largest body a request may have: every value of the largest batch, in JSON or raw."""
        values = self.max_batch * self.height[1] * self.width[1] * self.channels
        return values * (JSON_BYTES_PER_VALUE if json_body else 1) + HEADER_SLACK


def check_shape(rule: InputRule, name, datatype, shape) -> int:
    """The number of values of a declared input, after every check of its name, datatype and shape."""
    if name != rule.name:
        raise BadRequest(f"model {rule.model!r} has one input, {rule.name!r}, not {name!r}")
    if datatype != rule.datatype:
        raise BadRequest(f"input {name!r}: datatype {datatype!r}, expected {rule.datatype} (8-bit RGB images)")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {name!r}: the shape must be a list of integers, got {str(shape)[:80]}")
    if len(shape) != 4:
        raise BadRequest(f"input {name!r}: shape {shape[:8]} has rank {len(shape)}, expected 4: {rule.dims()}")
    n, h, w, c = shape
    if not 1 <= n <= rule.max_batch:
        raise BadRequest(f"input {name!r}: batch {n} is outside 1..{rule.max_batch}")
    if c != rule.channels:
        raise BadRequest(f"input {name!r}: {c} channels, expected {rule.channels} (RGB)")
    for what, value, (lo, hi) in (("height", h, rule.height), ("width", w, rule.width)):
        if not lo <= value <= hi:
            raise BadRequest(f"input {name!r}: {what} {value} is outside the model's {lo}..{hi}")
        if lo != hi and value % rule.multiple_of:
            raise BadRequest(f"input {name!r}: {what} {value} is not a multiple of {rule.multiple_of}")
    if h * w > MAX_PIXELS:
        raise BadRequest(f"input {name!r}: {h}x{w} is more than the {MAX_PIXELS} pixels an image may have")
    return n * h * w * c


def check_uint8(values: np.ndarray, name: str) -> None:
    if values.dtype.kind not in "iu":
        raise BadRequest(f"input {name!r}: uint8 data must be integers (0..255)")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise BadRequest(f"input {name!r}: uint8 values must be in 0..255, got {values.min()}..{values.max()}")


def check_http_infer(rules: dict, model: str, body: bytes, header_length) -> None:
    """A KServe v2 HTTP infer request (JSON, or a JSON header followed by binary data) for `model`."""
    rule = rules.get(model)
    if rule is None:
        raise BadRequest(f"unknown model {model!r}; served: {', '.join(sorted(rules))}", 404)
    if len(body) > rule.max_bytes():
        raise BadRequest(f"the request has {len(body)} bytes, more than a request to {model!r} needs "
                         f"({rule.max_bytes()})", 413)
    if header_length is not None:
        try:
            header_length = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {str(header_length)[:40]!r} is not an integer") from None
        if not 0 < header_length <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside 1..{len(body)} (the "
                             "body's length)")
    head = body[:header_length] if header_length is not None else body
    try:
        request = json.loads(head)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"the request is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise BadRequest(f"the request must be a JSON object whose 'inputs' list holds one input, {rule.name!r}")
    item = request["inputs"][0]
    if not isinstance(item, dict):
        raise BadRequest("an input must be a JSON object (name, shape, datatype, data)")
    count = check_shape(rule, item.get("name"), item.get("datatype"), item.get("shape"))
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"input {rule.name!r}: 'parameters' must be an object")
    if "shared_memory_region" in params:
        raise BadRequest("shared-memory inputs are not served")
    binary = len(body) - len(head)
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size != count:
            raise BadRequest(f"input {rule.name!r}: binary_data_size {str(size)[:40]} does not match its shape "
                             f"{item['shape']} ({count} bytes of uint8)")
        if binary != count:
            raise BadRequest(f"input {rule.name!r}: {binary} bytes of binary data follow the header, its shape "
                             f"needs {count}")
        return
    if binary:
        raise BadRequest(f"{binary} bytes follow the JSON but no input declares binary_data_size")
    data = item.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"input {rule.name!r}: no 'data' list and no binary_data_size")
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise BadRequest(f"input {rule.name!r}: 'data' is not a regular array of numbers") from None
    if values.dtype == object or values.size != count:
        raise BadRequest(f"input {rule.name!r}: shape {item['shape']} needs {count} values, 'data' holds "
                         f"{values.size if values.dtype != object else 'a ragged list of'}")
    check_uint8(values, rule.name)


def check_grpc_infer(rules: dict, request) -> None:
    """A gRPC ModelInferRequest (tritonclient.grpc.service_pb2)."""
    rule = rules.get(request.model_name)
    if rule is None:
        raise BadRequest(f"unknown model {request.model_name!r}; served: {', '.join(sorted(rules))}", 404)
    if len(request.inputs) != 1:
        raise BadRequest(f"the request must hold one input, {rule.name!r}, not {len(request.inputs)}")
    item = request.inputs[0]
    count = check_shape(rule, item.name, item.datatype, list(item.shape))
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1 or len(raw[0]) != count:
            raise BadRequest(f"input {rule.name!r}: {sum(len(r) for r in raw)} raw bytes, its shape "
                             f"{list(item.shape)} needs {count}")
        return
    contents = item.contents
    if any(len(getattr(contents, f)) for f in ("int_contents", "int64_contents", "uint64_contents", "fp32_contents",
                                               "fp64_contents", "bool_contents", "bytes_contents")):
        raise BadRequest(f"input {rule.name!r}: uint8 values go in uint_contents (or raw_input_contents)")
    if len(contents.uint_contents) != count:
        raise BadRequest(f"input {rule.name!r}: shape {list(item.shape)} needs {count} values, uint_contents holds "
                         f"{len(contents.uint_contents)}")
    check_uint8(np.fromiter(contents.uint_contents, np.int64, count), rule.name)


def largest_request(rules) -> int:
    """The body size limit of the whole front: its largest model's largest JSON request."""
    return max((r.max_bytes() for r in rules.values()), default=HEADER_SLACK) if rules else HEADER_SLACK
