"""Artifacts you can trust (issue 13, Python side): the sidecar is checked against one schema and, field by field,
against the contract embedded in the artifact; names from files are plain; inputs are checked before any
conversion. Uses the tiny depth artifacts built once per session (conftest.built)."""
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

from mp_deploy import cli
from mp_deploy.artifacts import (CONTRACT_ENTRY, ArtifactError, contract_of, embedded_contract, read_sidecar,
                                 sidecar_path)
from mp_deploy.engine import Engine, EngineError

ONNX, PT2 = "depth-nyu-tiny-fp32.onnx", "depth-nyu-tiny-fp32-cpu.pt2"


def _copy(out, name, folder):
    shutil.copy(out / name, folder / name)
    shutil.copy(sidecar_path(out / name), sidecar_path(folder / name))
    return folder / name


def _set(meta: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    for key in parents:
        meta = meta[key]
    if value is _DELETE:
        del meta[last]
    else:
        meta[last] = value


_DELETE = object()

# (field, new value, what the error must say)
EDITS = [
    ("task", "seg", "task"),
    ("task", "banana", "task is 'banana'"),
    ("preset.task", "pose", "preset.task"),
    ("shapes.height", [128, 256, 512], "'shapes' differs from the contract"),
    ("shapes.batch", [1, 1, 8], "'shapes' differs from the contract"),
    ("preset.max_depth", 80.0, "'preset' differs from the contract"),
    ("output.png16_scale", 256.0, "'output' differs from the contract"),
    ("input.scale", 1.0, "'input' differs from the contract"),
    ("precision", "fp16", "'precision' differs from the contract"),
    ("plugins", ["/any/path/x.so"], "plugins[0] must be an object"),
    ("plugins", [{"name": "../x.so", "sha256": "0" * 64}], "does not match"),
    ("plugins", [{"name": "/tmp/x.so", "sha256": "0" * 64}], "does not match"),
    ("plugins", [{"name": "x.so", "sha256": "0" * 64}], "x.so (plugin library of"),
    ("device", "banana", "device is 'banana'"),
    ("input.dtype", "float64", "input.dtype is 'float64'"),
    ("file_bytes", _DELETE, "lacks file_bytes"),
    ("file_bytes", "12", "file_bytes must be an integer"),
    ("shapes.multiple_of", 0, "shapes.multiple_of is 0"),
    ("output.num_classes", 150, "'output' differs from the contract"),
    ("bogus", {}, "unknown field 'bogus'"),
    ("format", "mp-deploy-artifact/1", "re-export"),
]


@pytest.mark.parametrize("name", [ONNX, PT2])
@pytest.mark.parametrize("field,value,message", EDITS, ids=[f"{f}={v!r}"[:40] for f, v, _ in EDITS])
def test_an_edited_sidecar_is_refused_naming_the_field(built, tmp_path, name, field, value, message):
    out, _ = built("depth")
    path = _copy(out, name, tmp_path)
    meta = json.loads(sidecar_path(path).read_text())
    _set(meta, field, value)
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Engine.load(path)


def test_malformed_sidecars_are_artifact_errors(built, tmp_path):
    out, _ = built("depth")
    path = _copy(out, ONNX, tmp_path)
    for text, message in ((b"\xff\xfe not text", "not UTF-8"), (b"{", "not valid JSON"), (b"[1, 2]", "must be an object"),
                          (b'{"format": "mp-deploy-artifact/2"}', "lacks"),
                          (b"[" * 100000 + b"]" * 100000, "nested deeper than 64"),
                          # a 5001-digit number: Python refuses to convert it (was a raw ValueError)
                          (b'{"file_bytes": 1' + b"0" * 5000 + b"}", "not valid JSON"),
                          (b'{"file_bytes": NaN}', "not valid JSON")):
        sidecar_path(path).write_bytes(text)
        with pytest.raises(ArtifactError, match=message):
            Engine.load(path)
    sidecar_path(path).unlink()
    os.mkfifo(sidecar_path(path))  # reading it would block until a writer came
    with pytest.raises(ArtifactError, match="not a regular file \\(a FIFO\\)"):
        Engine.load(path)


def test_the_contract_is_inside_the_artifact(built):
    out, artifacts = built("depth")
    for a in artifacts:
        meta = read_sidecar(a.path)
        assert embedded_contract(a.path, meta["backend"]) == contract_of(meta)
        assert meta["parity"]["rel_l2"] == pytest.approx(a.rel_l2) and meta["parity"]["rule"] == 1e-4
        assert meta["parity"]["ok"] is True
    with zipfile.ZipFile(out / PT2) as z:  # the archive's root folder is the artifact's own name
        roots = {n.split("/", 1)[0] for n in z.namelist()}
        assert roots == {PT2[: -len(".pt2")]} and f"{PT2[:-4]}/{CONTRACT_ENTRY}" in z.namelist()


def test_a_contract_edited_inside_the_artifact_is_refused(built, tmp_path):
    """Both edited consistently (a package whose contract says 512 x 512, a sidecar that agrees with its new
    checksum but keeps the built shapes): the field that differs is named."""
    from mp_deploy.artifacts import Sidecar, write_sidecar

    out, _ = built("depth")
    path = _copy(out, PT2, tmp_path)
    meta = json.loads(sidecar_path(path).read_text())
    contract = json.loads(json.dumps(contract_of(meta)))
    contract["shapes"]["height"] = [512, 512, 512]
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, json.dumps(contract) if n.endswith(CONTRACT_ENTRY) else data)
    write_sidecar(path, Sidecar(**meta))  # new checksum, the old contract fields
    with pytest.raises(ArtifactError, match="'shapes' differs from the contract inside the artifact"):
        Engine.load(path)


def test_files_get_the_umask_mode(built):
    out, _ = built("depth")
    umask = os.umask(0)
    os.umask(umask)
    for p in (out / ONNX, out / PT2, sidecar_path(out / ONNX), sidecar_path(out / PT2)):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


@pytest.fixture(scope="module")
def engine(built):
    out, _ = built("depth")
    return Engine.load(out / ONNX)


def test_inputs_are_checked_before_any_conversion(engine):
    img = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    want = engine.run(img)["depth"]
    # any strides work (copied)
    assert torch.equal(engine.run(np.ascontiguousarray(img[::-1])[::-1])["depth"], want)
    assert torch.equal(engine.run(np.asfortranarray(img))["depth"], want)
    assert torch.equal(engine.run(torch.from_numpy(img).permute(2, 0, 1).float() / 255)["depth"],
                       engine.run(torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255)["depth"])
    cases = [
        (np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (12000, 12000, 3)), "more than the 33554432"),
        (img.astype(np.float32), r"must be \(3, H, W\) or \(B, 3, H, W\)"),
        (img.astype(np.float32).transpose(2, 0, 1), r"must be in \[0, 1\], these span .*pass 8-bit images as uint8"),
        (np.array([[img]], dtype=object), "numeric array"),
        (np.zeros((0, 128, 3), np.uint8), "empty images"),
        (img.astype(np.int32), "uint8 .* or floating point"),
        (np.full((3, 128, 128), np.nan, np.float32), "NaN or inf"),
        (np.zeros((2, 128, 128, 3), np.uint8), "batch 2 is outside the range"),
        (np.zeros((512, 512, 3), np.uint8), "height 512 is outside the range"),
        ([[1, 2, 3]], "expected an image array"),
    ]
    for images, message in cases:
        with pytest.raises(EngineError, match=message):
            engine.run(images)


def test_a_preset_name_that_is_a_path_is_refused_before_any_write(tmp_path):
    """A checkpoint whose metadata preset name holds `../`: refused, nothing written in or beside --output."""
    from safetensors.torch import load_file, save_file

    from mp_deploy.checkpoints import save_checkpoint
    from mp_deploy.tasks import seeded_model

    good = tmp_path / "pose.safetensors"
    save_checkpoint(seeded_model("pose", refine_steps=1), good)
    from mp_deploy.checkpoints import safetensors_metadata

    meta = safetensors_metadata(good)
    preset = json.loads(meta["preset"])
    preset["name"] = "../../escaped"
    evil = tmp_path / "evil.safetensors"
    save_file(load_file(good), evil, metadata=dict(meta, preset=json.dumps(preset)))
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = cli.main(["build", "--task", "pose", "--checkpoint", str(evil), "--output", str(tmp_path / "out"),
                   "--backend", "onnx"])
    assert rc == 2
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == before


def test_the_runtime_is_a_leaf(built):
    """`import mp_deploy.engine` and loading + running an .onnx through it import neither diffusers nor the
    model or checkpoint code (a fresh process)."""
    from helpers import run as run_helper

    out, _ = built("depth")
    assert run_helper("runtime_imports").strip() == "ok"
    assert run_helper("runtime_imports", out / ONNX).strip() == "ok"
