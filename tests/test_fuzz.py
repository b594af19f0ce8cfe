"""Seeded fuzzing of everything mp-deploy reads from files (issue 13): random mutations of sidecars against
Engine.load/run, of checkpoint headers against load_model, and of image arrays against Engine.run. Each case must
end in success with a correct result or a typed error (MpDeployError): no other exception, no silent success on a
mutated contract, no file left behind. Bounded by a fixed, seeded case count (about a minute in all)."""
import copy
import json
import math
import random
import shutil
import struct

import numpy as np
import pytest
import torch

from helpers.mutations import paths
from mp_deploy.artifacts import contract_of, sidecar_path
from mp_deploy.checkpoints import load_model, save_checkpoint
from mp_deploy.engine import Engine
from mp_deploy.errors import MpDeployError
from mp_deploy.tasks import seeded_model

SEED = 13


def _values(rng: random.Random):
    return rng.choice([None, True, False, 0, -1, 1, 2 ** 40, -(2 ** 63), 1.5, -0.0, math.inf, math.nan, "", "x",
                       "../../etc/passwd", "/tmp/x.so", "depth", "seg", "cuda", "float16", "\u00e9\u00e8", [], [1, 2, 3],
                       [64, 64, 64], {}, {"name": "x"}, "a" * 5000])


def mutate_json(meta: dict, rng: random.Random) -> dict:
    """One random structural mutation: replace, delete, add, perturb a number or duplicate a sibling."""
    meta = copy.deepcopy(meta)
    path = rng.choice([p for p in paths(meta) if p])
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    key, op = path[-1], rng.choice(["replace", "delete", "add", "perturb", "swap"])
    if op == "delete":
        del parent[key]
    elif op == "add" and isinstance(parent, dict):
        parent[f"extra{rng.randrange(100)}"] = _values(rng)
    elif op == "perturb" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
        parent[key] = rng.choice([parent[key] + 1, parent[key] - 1, parent[key] * 2, -parent[key], parent[key] * 64])
    elif op == "swap" and isinstance(parent, dict) and len(parent) > 1:
        other = rng.choice([k for k in parent if k != key])
        parent[key], parent[other] = parent[other], parent[key]
    else:
        parent[key] = _values(rng)
    return meta


@pytest.mark.parametrize("name", ["depth-nyu-tiny-fp32.onnx", "depth-nyu-tiny-fp32-cpu.pt2"])
def test_fuzz_sidecars(built, tmp_path, name):
    out, _ = built("depth")
    shutil.copy(out / name, tmp_path / name)
    original = json.loads(sidecar_path(out / name).read_text())
    image = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    want = Engine.load(out / name).run(image)["depth"]
    rng = random.Random(SEED)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(60):
        if rng.random() < 0.2:  # byte-level: flips and truncation of the JSON text
            text = bytearray(json.dumps(original).encode())
            for _ in range(rng.randint(1, 4)):
                text[rng.randrange(len(text))] = rng.randrange(256)
            data = bytes(text[: rng.randrange(len(text) + 1)] if rng.random() < 0.3 else text)
            meta = None
        else:
            meta = mutate_json(original, rng)
            data = json.dumps(meta).encode()
        sidecar_path(tmp_path / name).write_bytes(data)
        try:
            engine = Engine.load(tmp_path / name)
            got = engine.run(image)["depth"]
        except MpDeployError:
            outcomes["refused"] += 1
            continue
        # loaded: only fields that do not decide how the artifact is fed and read may have changed
        outcomes["loaded"] += 1
        assert meta is not None and contract_of(meta) == contract_of(original), f"case {i}: mutated contract loaded"
        assert torch.equal(got, want), f"case {i}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, name + ".json"])  # nothing left behind
    assert outcomes["refused"] >= 30, outcomes
    print(f"{name}: {outcomes}")


def _mutate_header(data: bytes, rng: random.Random) -> bytes:
    """A safetensors file: 8-byte header length, JSON header, tensor bytes. Mutate the header (JSON-level or
    bytes), its length field, or truncate the file."""
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    op = rng.choice(["json", "json", "json", "bytes", "length", "truncate"])
    if op == "json":
        header = mutate_json(header, rng)
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + body
    if op == "bytes":
        raw = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            raw[8 + rng.randrange(n)] = rng.randrange(256)
        return bytes(raw)
    if op == "length":
        return struct.pack("<Q", rng.choice([0, n - 1, n + 1, 2 ** 40, 2 ** 63])) + data[8:]
    return data[: rng.randrange(len(data))]


def test_fuzz_checkpoint_headers(tmp_path):
    model = seeded_model("pose", refine_steps=1)
    good = tmp_path / "good.safetensors"
    save_checkpoint(model, good)
    data = good.read_bytes()
    want = model.state_dict()
    rng = random.Random(SEED)
    outcomes = {"refused": 0, "loaded": 0}
    path = tmp_path / "fuzz.safetensors"
    for i in range(120):
        path.write_bytes(_mutate_header(data, rng))
        try:
            loaded = load_model(path)
        except MpDeployError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1  # a change the format cannot see (e.g. metadata): the weights must be intact
        state = loaded.state_dict()
        assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want), f"case {i}"
    assert outcomes["refused"] >= 90, outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.safetensors", "good.safetensors"]
    print(outcomes)


def test_fuzz_image_arrays():
    engine = Engine.from_model(seeded_model("depth", refine_steps=1))
    engine.meta["shapes"] = {"batch": [1, 1, 2], "height": [64, 64, 128], "width": [64, 64, 128], "multiple_of": 64}
    rng = np.random.default_rng(SEED)
    outcomes = {"refused": 0, "ran": 0}
    for i in range(150):
        dtype = rng.choice([np.uint8, np.float32, np.float64, np.float16, np.int32, np.bool_, np.int8])
        if rng.random() < 0.4:  # a valid layout, then the values and strides decide
            side = int(rng.choice([64, 128]))
            shape = (side, side, 3) if dtype == np.uint8 else (3, side, side)
        else:
            shape = tuple(int(v) for v in rng.choice([0, 1, 2, 3, 4, 63, 64, 128, 129], size=rng.integers(0, 6)))
        if np.prod(shape, dtype=np.int64) > 1 << 22:
            continue
        with np.errstate(over="ignore", invalid="ignore"):  # fp16 overflow to inf: part of the fuzz
            x = (rng.random(shape) * rng.choice([1, 1, 255, 1e6])).astype(dtype)
        if x.size and rng.random() < 0.2:
            x.flat[rng.integers(x.size)] = np.nan if x.dtype.kind == "f" else 0
        if x.ndim and rng.random() < 0.3:
            x = np.flip(x, axis=int(rng.integers(x.ndim)))
        try:
            out = engine.run(x)["depth"]
        except MpDeployError:
            outcomes["refused"] += 1
            continue
        outcomes["ran"] += 1
        assert torch.isfinite(out).all() and out.shape[-2:] == (x.shape[-3:-1] if x.dtype == np.uint8 else x.shape[-2:])
    assert outcomes["refused"] >= 80 and outcomes["ran"] >= 5, outcomes
    print(outcomes)
