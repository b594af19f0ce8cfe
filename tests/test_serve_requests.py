"""The front's request rules (mp_deploy.serve.requests) on requests written here: every client mistake and hostile
declaration named as a client error before anything reaches tritonserver; good requests pass."""
import json

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mp_deploy.serve.requests import BadRequest, InputRule, check_grpc_infer, check_http_infer

FIXED = InputRule("depth-demo", "images", 4, (64, 64), (64, 64))
DYNAMIC = InputRule("seg-demo", "images", 2, (128, 512), (128, 1024), multiple_of=64)
RULES = {r.model: r for r in (FIXED, DYNAMIC)}


def body(shape, data=None, datatype="UINT8", name="images", **params):
    item = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        item["data"] = data
    if params:
        item["parameters"] = params
    return json.dumps({"inputs": [item]}).encode()


def refused(model, raw, header=None, status=400):
    with pytest.raises(BadRequest) as e:
        check_http_infer(RULES, model, raw, header)
    assert e.value.status == status
    return str(e.value)


def test_good_requests_pass():
    n = 2 * 64 * 64 * 3
    check_http_infer(RULES, FIXED.model, body([2, 64, 64, 3], [7] * n), None)
    head = body([2, 64, 64, 3], binary_data_size=n)
    check_http_infer(RULES, FIXED.model, head + bytes(n), str(len(head)))
    check_http_infer(RULES, DYNAMIC.model, body([1, 192, 256, 3], np.zeros((1, 192, 256, 3), int).tolist()), None)


@pytest.mark.parametrize("shape, needle", [
    ([1, 100000, 100000, 3], "height 100000 is outside the model's 64..64"),  # the 200-byte request that killed it
    ([1, 20000, 20000, 3], "height 20000"),
    ([64, 64, 3], "rank 3, expected 4"),  # a rank-3 request was told 'batch-size must be <= 1'
    ([5, 64, 64, 3], "batch 5 is outside 1..4"),
    ([0, 64, 64, 3], "batch 0"),
    ([1, -1, 64, 3], "height -1"),
    ([1, 64, 64, 4], "4 channels"),
    ([1, 64.0, 64, 3], "list of integers"),
    ("1,64,64,3", "list of integers"),
    ([True, 64, 64, 3], "list of integers"),
])
def test_declared_shapes_are_checked_before_anything(shape, needle):
    assert needle in refused(FIXED.model, body(shape, list(range(10))))


def test_dynamic_sides_keep_their_range_and_step():
    assert "not a multiple of 64" in refused(DYNAMIC.model, body([1, 200, 256, 3], [0]))
    assert "width 2048 is outside the model's 128..1024" in refused(DYNAMIC.model, body([1, 128, 2048, 3], [0]))


@pytest.mark.parametrize("data, needle", [
    ([300] * (64 * 64 * 3), "0..255, got 300..300"),  # wrapped to 44 before
    ([256] + [0] * (64 * 64 * 3 - 1), "0..255"),
    ([-1] + [0] * (64 * 64 * 3 - 1), "0..255"),
    ([1.5] * (64 * 64 * 3), "must be integers"),
    ([True] * (64 * 64 * 3), "must be integers"),
    (["7"] * (64 * 64 * 3), "must be integers"),
    ([0] * 10, "needs 12288 values, 'data' holds 10"),
    ([0] * (64 * 64 * 3 + 1), "needs 12288 values"),
    ([[0, 0], [0]], "regular array"),
])
def test_values_are_counted_and_in_range(data, needle):
    assert needle in refused(FIXED.model, body([1, 64, 64, 3], data))


def test_malformed_requests_are_client_errors():
    assert "not valid JSON" in refused(FIXED.model, b"{not json")
    assert "not valid JSON" in refused(FIXED.model, b"\xff\xfe")
    assert "not valid JSON" in refused(FIXED.model, b"[" * 100_000)  # nesting past the parser's depth
    assert "one input" in refused(FIXED.model, json.dumps({"inputs": []}).encode())
    assert "one input" in refused(FIXED.model, b"[]")
    assert "not 'pixels'" in refused(FIXED.model, body([1, 64, 64, 3], [0], name="pixels"))
    assert "datatype 'FP32'" in refused(FIXED.model, body([1, 64, 64, 3], [0.0], datatype="FP32"))
    assert "unknown model" in refused("banana", body([1, 64, 64, 3], [0]), status=404)
    assert "shared-memory" in refused(FIXED.model, body([1, 64, 64, 3], shared_memory_region="r"))


def test_binary_sizes_must_add_up():
    n = 64 * 64 * 3
    head = body([1, 64, 64, 3], binary_data_size=n)
    assert "follow the header, its shape needs" in refused(FIXED.model, head + bytes(n - 1), str(len(head)))
    assert "binary_data_size 12" in refused(FIXED.model, body([1, 64, 64, 3], binary_data_size=12) + bytes(12),
                                            str(len(body([1, 64, 64, 3], binary_data_size=12))))
    assert "is not an integer" in refused(FIXED.model, head + bytes(n), "12x")
    assert "outside 1.." in refused(FIXED.model, head + bytes(n), str(len(head) + n + 1))
    assert "not valid JSON" in refused(FIXED.model, head + bytes(n), str(len(head) + 10))  # the header cut wrong
    assert "no input declares binary_data_size" in refused(FIXED.model, body([1, 64, 64, 3], [0] * n) + b"xx",
                                                           str(len(body([1, 64, 64, 3], [0] * n))))


def test_the_body_size_is_bounded_by_the_model():
    big = b" " * (FIXED.max_bytes() + 1)
    assert "more than a request to" in refused(FIXED.model, big, status=413)


def grpc_request(shape, uints=None, raw=None, model=FIXED.model, datatype="UINT8"):
    request = service_pb2.ModelInferRequest(model_name=model)
    item = request.inputs.add(name="images", datatype=datatype, shape=shape)
    if uints is not None:
        item.contents.uint_contents.extend(uints)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def test_grpc_requests():
    n = 64 * 64 * 3
    check_grpc_infer(RULES, grpc_request([1, 64, 64, 3], raw=bytes(n)))
    check_grpc_infer(RULES, grpc_request([1, 64, 64, 3], uints=[255] * n))
    for request, needle in ((grpc_request([1, 100000, 100000, 3], raw=bytes(10)), "height 100000"),
                            (grpc_request([1, 64, 64, 3], uints=[300] * n), "0..255"),  # uint_contents wrapped too
                            (grpc_request([1, 64, 64, 3], raw=bytes(n - 1)), "raw bytes"),
                            (grpc_request([1, 64, 64, 3], uints=[1] * 10), "needs 12288 values"),
                            (grpc_request([1, 64, 64, 3], model="banana"), "unknown model")):
        with pytest.raises(BadRequest, match=needle):
            check_grpc_infer(RULES, request)
