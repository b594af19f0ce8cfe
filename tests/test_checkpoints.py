"""Official layout <-> our model, our safetensors, SD-1.5 weights, and clear errors for wrong files."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from mp_deploy.checkpoints import (CheckpointError, load_checkpoint, load_model, load_official, load_sd_weights,
                                   ours_to_official, save_checkpoint, save_official, unet_to_ldm, vae_to_ldm)
from mp_deploy.models import Trace
from mp_deploy.tasks import build_model, seeded_model

TINY = "tiny"


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("task", ["depth", "seg"])
def test_official_round_trip_every_key(task, tmp_path):
    model = seeded_model(task, size=TINY)
    official = ours_to_official(model)
    p = "encoder." if task == "depth" else ""
    # aliases of the UNet output head are written, equal to it
    assert torch.equal(official[f"{p}cross_unet_conv2.0.weight"], official[f"{p}unet.unet.diffusion_model.out.0.weight"])
    assert f"{p}encoder_vq.post_quant_conv.weight" in official
    if task == "seg":  # unused keys of official seg files survive the round trip
        official["sd_model.betas"] = torch.linspace(0, 1, 1000)
        official["unet.unet.diffusion_model.time_embed.0.weight"] = torch.randn(128, 32)
    path = tmp_path / "official.pth"
    torch.save({"model": official} if task == "depth" else {"meta": {}, "state_dict": official}, path)
    loaded = load_official(path, size=TINY)
    _same_state(model.state_dict(), loaded.state_dict())
    _same_state(official, ours_to_official(loaded))
    save_official(loaded, tmp_path / "again.pth")
    again = torch.load(tmp_path / "again.pth", weights_only=True)
    _same_state(official, again["model"] if task == "depth" else again["state_dict"])


def test_official_preset_from_file_and_overrides():
    model = seeded_model("depth", size=TINY, refine_steps=2)
    official = ours_to_official(model)
    kitti = load_official(official, preset="kitti", size=TINY)
    assert kitti.preset.refine_steps == 2 and kitti.preset.max_depth == 80.0 and kitti.preset.resize_scale == 2
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    ours, theirs = Trace(), Trace()
    with torch.no_grad():  # the same encoder input: the same weights give the same backbone features
        kitti.run_stages({"encoder_input": x}, ours)
        model.run_stages({"encoder_input": x}, theirs)
    torch.testing.assert_close(ours.tensors["unet_f0_ob11"], theirs.tensors["unet_f0_ob11"])


def test_official_ddp_prefix_is_stripped(tmp_path):
    model = seeded_model("depth", size=TINY)
    official = {f"module.{k}": v for k, v in ours_to_official(model).items()}
    torch.save({"model": official}, tmp_path / "ddp.pth")
    _same_state(model.state_dict(), load_official(tmp_path / "ddp.pth", size=TINY).state_dict())


def test_missing_and_misshaped_keys_are_named():
    official = ours_to_official(seeded_model("depth", size=TINY))
    missing = dict(official)
    del missing["encoder.layer1.0.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): neck.layer1.0.weight"):
        load_official(missing, size=TINY)
    bad = dict(official)
    bad["last_layer_depth.2.weight"] = torch.zeros(2, 32, 3, 3)
    with pytest.raises(CheckpointError, match=r"mis-shaped.*head.last_layer.2.weight: \(2, 32, 3, 3\) in file"):
        load_official(bad, size=TINY)
    extra = dict(official, **{"encoder.bogus.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): encoder.bogus.weight"):
        load_official(extra, size=TINY)
    alias = dict(official)
    alias["encoder.cross_unet_conv3.2.bias"] = alias["encoder.cross_unet_conv3.2.bias"] + 1
    with pytest.raises(CheckpointError, match="alias of the UNet output head"):
        load_official(alias, size=TINY)
    with pytest.raises(CheckpointError, match="not an official Meta Prompts checkpoint"):
        load_official({"foo": torch.zeros(1)}, size=TINY)
    with pytest.raises(CheckpointError, match="mis-shaped|not understood"):  # a tiny file into the full-size model
        load_official(official, size="sd15")


def test_truncated_and_foreign_files(tmp_path):
    model = seeded_model("pose", size=TINY)
    good = tmp_path / "pose.safetensors"
    save_checkpoint(model, good)
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.safetensors")
    torch.save({"model": ours_to_official(seeded_model("depth", size=TINY))}, tmp_path / "d.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "d.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_official(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not an mp-deploy checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_our_checkpoint_round_trip_is_atomic(tmp_path):
    model = seeded_model("seg", size=TINY, preset="cityscapes")
    path = tmp_path / "seg.safetensors"
    save_checkpoint(model, path)
    assert os.listdir(tmp_path) == ["seg.safetensors"]  # no temporary left behind
    loaded = load_model(path)
    assert loaded.preset.name == "cityscapes" and loaded.preset.num_classes == 19
    _same_state(model.state_dict(), loaded.state_dict())

    class Boom(RuntimeError):
        pass

    def failing_write(tmp):
        open(tmp, "wb").write(b"partial")
        raise Boom()

    from mp_deploy.files import atomic_write
    with pytest.raises(Boom):
        atomic_write(tmp_path / "other.bin", failing_write)
    assert sorted(os.listdir(tmp_path)) == ["seg.safetensors"]


def _fake_sd_single_file(model, path):
    """An original-layout SD file (ldm keys) holding the model's UNet and VAE encoder, plus a VAE decoder key."""
    sd = {}
    unet_state = model.backbone.unet.state_dict()
    cfg = model.size.unet
    has_attn = [t.startswith("CrossAttn") for t in cfg["up_block_types"]]
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet_state, cfg["layers_per_block"], has_attn).items()})
    sd.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(model.backbone.vae.state_dict()).items()})
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)  # decoder is ignored
    sd["cond_stage_model.transformer.x"] = torch.zeros(1)  # text encoder is ignored
    torch.save({"state_dict": sd}, path)


def test_sd_weights_from_single_file_and_diffusers_folder(tmp_path):
    source = seeded_model("depth", size=TINY, seed=1)
    _fake_sd_single_file(source, tmp_path / "sd.ckpt")
    target = build_model("depth", size=TINY)
    load_sd_weights(target, tmp_path / "sd.ckpt")
    _same_state(source.backbone.unet.state_dict(), target.backbone.unet.state_dict())
    _same_state(source.backbone.vae.state_dict(), target.backbone.vae.state_dict())

    folder = tmp_path / "sd15"
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    save_file({k: v.contiguous() for k, v in source.backbone.unet.state_dict().items()},
              folder / "unet" / "diffusion_pytorch_model.safetensors")
    save_file({k: v.contiguous() for k, v in source.backbone.vae.state_dict().items()},
              folder / "vae" / "diffusion_pytorch_model.safetensors")
    target2 = build_model("seg", size=TINY)
    load_sd_weights(target2, folder)
    _same_state(source.backbone.unet.state_dict(), target2.backbone.unet.state_dict())

    with pytest.raises(CheckpointError, match="not a Stable Diffusion single-file checkpoint"):
        torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "bad.ckpt")
        load_sd_weights(build_model("depth", size=TINY), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="Stable Diffusion UNet|UNet keys not understood"):
        load_sd_weights(build_model("depth", size="sd15", init=False), tmp_path / "sd.ckpt")  # tiny SD into SD-1.5


# ------------------------------------------------------------------ untrusted files (issue 13)

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_files_are_cast_to_the_model(dtype, tmp_path):
    model = seeded_model("depth", size=TINY)
    save_checkpoint(model, tmp_path / "half.safetensors", dtype=dtype)
    loaded = load_model(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    err = ((got - want).norm() / (want - want.mean()).norm()).item()
    assert 0 < err < (2e-2 if dtype == torch.float16 else 1e-1)  # the weights' own rounding, nothing more


def test_half_precision_files_keep_running_statistics_in_fp32(tmp_path):
    """A running variance above fp16's largest value (65504) survives a half-precision file."""
    model = seeded_model("depth", size=TINY)
    bn = model.neck.layer2.deconv_layers[1]
    with torch.no_grad():
        bn.running_var.fill_(7e4)
    save_checkpoint(model, tmp_path / "half.safetensors", dtype=torch.float16)
    state = load_file(tmp_path / "half.safetensors")
    assert state["neck.layer2.deconv_layers.1.running_var"].dtype == torch.float32
    assert state["neck.layer2.deconv_layers.1.weight"].dtype == torch.float16
    assert torch.equal(load_model(tmp_path / "half.safetensors").neck.layer2.deconv_layers[1].running_var,
                       bn.running_var)


def test_checkpoints_get_the_umask_mode(tmp_path):
    """safetensors creates its files 0600; ours get what any file of the process gets."""
    umask = os.umask(0o022)
    os.umask(umask)
    save_checkpoint(seeded_model("pose", size=TINY), tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    model = seeded_model("pose", size=TINY)
    with torch.no_grad():
        model.head.final_layer.bias[0] = float("nan")
    save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=r"NaN or inf: head.final_layer.bias"):
        load_model(tmp_path / "nan.safetensors")


def _with_metadata(tmp_path, **changes):
    from safetensors.torch import load_file

    from mp_deploy.checkpoints import safetensors_metadata

    good = tmp_path / "good.safetensors"
    if not good.exists():
        save_checkpoint(seeded_model("depth", size=TINY, refine_steps=1), good)
    meta = safetensors_metadata(good)
    preset = json.loads(meta["preset"])
    preset.update({k[len("preset."):]: v for k, v in changes.items() if k.startswith("preset.")})
    meta["preset"] = json.dumps(preset)
    for k, v in changes.items():
        if not k.startswith("preset."):
            meta[k] = v
    meta = {k: v for k, v in meta.items() if v is not None}
    path = tmp_path / "edited.safetensors"
    save_file(load_file(good), path, metadata=meta)
    return path


@pytest.mark.parametrize("changes,message", [
    ({"task": "banana"}, "metadata task 'banana' differs"),
    ({"size": "huge"}, "unknown model size 'huge'"),
    ({"preset": None}, "metadata lacks preset"),
    ({"preset": "{not json"}, "metadata preset: not valid JSON"),
    # hostile metadata: nesting that would overflow a recursive parser, a number Python refuses to convert
    ({"preset": "[" * 5000 + "]" * 5000}, "metadata preset: JSON nested deeper than 64"),
    ({"preset": '{"name": "nyu", "task": "depth", "refine_steps": 1' + "0" * 5000 + "}"},
     "metadata preset: not valid JSON"),
    ({"preset.colour": "blue"}, "unknown preset field.*'colour'"),
    ({"preset.task": "banana"}, "preset task 'banana'"),
    ({"preset.refine_steps": 0}, "refine_steps 0 is out of bounds"),
    # declared sizes that would take minutes (10^6 refinement steps) or terabytes (a 1e9 window) to refuse later
    ({"preset.refine_steps": 10 ** 6}, "refine_steps 1000000 is out of bounds"),
    ({"preset.window": [10 ** 9, 10 ** 9]}, r"window \(1000000000, 1000000000\) is out of bounds"),
    ({"preset.num_prompts": 10 ** 7}, "num_prompts 10000000 is out of bounds"),
    ({"preset.max_depth": "far"}, "preset field 'max_depth' has a wrong value"),
    ({"preset.name": "../x"}, "preset name '../x' is not a plain name"),
])
def test_bad_metadata_names_itself(tmp_path, changes, message):
    with pytest.raises(CheckpointError, match=message):
        load_model(_with_metadata(tmp_path, **changes))


def test_garbage_files_are_checkpoint_errors(tmp_path):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}" + b"\0" * 64)
    (tmp_path / "huge_header.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("garbage", "huge_header", "empty"):
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint .*{name}"):
            load_model(tmp_path / f"{name}.safetensors")


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from mp_deploy import cli

    (tmp_path / "garbage.safetensors").write_bytes(b"junk")
    (tmp_path / "file").write_text("x")
    for argv, message in (
            (["--checkpoint", str(tmp_path / "garbage.safetensors")], "cannot read checkpoint"),
            (["--checkpoint", str(tmp_path / "absent.safetensors")], "checkpoint not found"),
            (["--output", str(tmp_path / "file" / "out")], "a file is in the way"),
            (["--preset", "ade20k"], "preset 'ade20k' is for task 'seg'")):
        rc = cli.main(["build", "--task", "depth", "--backend", "onnx", *argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors: exit 2 too
        cli.main(["build", "--task", "depth", "--runs", "0"])
    assert usage.value.code == 2 and "must be at least 1" in capsys.readouterr().err
