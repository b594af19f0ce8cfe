"""The eager model: shapes, training step, the reference's numerics settings (which the golden cannot see)."""
import pytest
import torch
import torch.nn.functional as F

from mp_deploy.configs import get_size
from mp_deploy.errors import UsageError
from mp_deploy.models import Trace
from mp_deploy.tasks import build_model, seeded_model
from mp_deploy.unet import build_unet, unet_features


@pytest.mark.parametrize("task,shape,out_shape", [
    ("depth", (2, 3, 64, 96), (2, 1, 64, 96)),
    ("seg", (2, 3, 64, 64), (2, 150, 64, 64)),
    ("pose", (2, 3, 64, 128), (2, 17, 16, 32)),
])
def test_forward_shapes_and_backward(task, shape, out_shape):
    model = seeded_model(task).train()
    x = torch.rand(shape)
    out = model(x)
    assert out.shape == out_shape
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    unet_grad = model.backbone.unet.conv_in.weight.grad
    assert unet_grad is not None and unet_grad.abs().sum() > 0
    assert model.backbone.step_embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.vae.parameters())  # frozen, as in the reference


def test_depth_range():
    model = seeded_model("depth")
    with torch.no_grad():
        d = model(torch.rand(1, 3, 64, 64))
    assert d.min() > 0 and d.max() < model.preset.max_depth


def test_forward_is_its_stages_in_turn():
    """forward == the stages run one by one; the hook sees every stage, in order, with its state."""
    model = seeded_model("depth")
    x = torch.rand(1, 3, 64, 64)
    seen = []
    with torch.no_grad():
        out = model(x, hook=lambda name, state: seen.append((name, sorted(state))))
        state = {"images": x}
        for stage in model.stages():
            state = stage.fn(state)
    assert [name for name, _ in seen] == ["vae_encode", "unet_pass1", "unet_pass2", "unet_pass3", "neck", "head"]
    assert seen[-1][1] == ["hw", "output"]
    assert torch.equal(out, state["output"])


def test_seg_training_mode_gives_the_auxiliary_logits():
    seg = seeded_model("seg").train()
    state = seg.run_stages({"images": torch.rand(2, 3, 64, 64)})
    assert state["output"].shape == (2, 150, 64, 64) and state["aux_output"].shape == (2, 150, 4, 4)
    assert "aux_output" not in seg.eval().run_stages({"images": torch.rand(1, 3, 64, 64)})


def test_refine_steps_reuse_one_unet():
    model = seeded_model("depth", refine_steps=2)
    n_unet = sum(p.numel() for p in model.backbone.unet.parameters())
    trace = Trace()
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64), hook=trace)
    assert "unet_input_step2" in trace.tensors and "unet_input_step3" not in trace.tensors
    assert model.backbone.step_embeddings.shape[0] == 2
    # one UNet, whatever R is
    assert n_unet == sum(p.numel() for p in seeded_model("depth", refine_steps=3).backbone.unet.parameters())


def test_skip_resize_grows_odd_latents():
    """Latent 9x13: the encoder path is 9x13 -> 5x7 -> 3x4 -> 2x2 and skips are resized to the decoder sizes."""
    size = get_size("tiny")
    torch.manual_seed(0)
    unet = build_unet(size.unet).eval()
    x = torch.randn(1, 4, 9, 13)
    emb = torch.randn(1, size.embed_dim)
    ctx = torch.randn(1, 5, size.prompt_dim)
    with torch.no_grad():
        f = unet_features(unet, x, emb, ctx)
    assert [tuple(t.shape[-2:]) for t in f] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_bad_input_is_named():
    model = seeded_model("depth")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_unknown_preset_and_size():
    with pytest.raises(UsageError, match="unknown preset"):
        build_model(preset="nyu2")
    with pytest.raises(UsageError, match="unknown model size"):
        build_model("depth", size="huge")
    with pytest.raises(UsageError, match="is for task"):
        build_model("seg", preset="nyu")
    with pytest.raises(UsageError, match="unknown task"):
        build_model("banana")
    with pytest.raises(UsageError, match="refine_steps 0 is out of bounds"):
        build_model("depth", refine_steps=0)
    with pytest.raises(UsageError, match="refine_steps 17 is out of bounds"):  # refused before building 17 passes
        build_model("depth", refine_steps=17)


def test_sd15_numerics_settings_pinned():
    """eps / GELU / heads the golden files cannot resolve at 1e-4 (README of the golden files)."""
    model = build_model("depth", size="sd15", init=False)
    unet, vae = model.backbone.unet, model.backbone.vae
    resnet_norms = [m for n, m in unet.named_modules() if isinstance(m, torch.nn.GroupNorm)
                    and ("resnets" in n or n == "conv_norm_out")]
    transformer_norms = [m for n, m in unet.named_modules() if n.endswith("attentions.0.norm") or
                         (n.endswith(".norm") and "attentions" in n)]
    assert len(resnet_norms) == 45 and all(m.eps == 1e-5 and m.num_groups == 32 for m in resnet_norms)
    assert len(transformer_norms) == 16 and all(m.eps == 1e-6 for m in transformer_norms)
    vae_norms = [m for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(vae_norms) == 22 and all(m.eps == 1e-6 for m in vae_norms)
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    assert attn.attn1.heads == 8 and attn.attn2.heads == 8
    t = torch.linspace(-4, 4, 101)
    geglu = attn.ff.net[0]
    assert torch.equal(geglu.gelu(t), F.gelu(t))  # exact-erf GEGLU; tanh GELU is a 2e-4 slip
    assert not torch.equal(geglu.gelu(t), F.gelu(t, approximate="tanh"))
    assert unet.time_embedding is None
    # param count of the reference (section 4 of the architecture brief): UNet 857.5 M without time_embed
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(857.5e6, rel=1e-3)
    assert sum(p.numel() for p in model.neck.out_layer.parameters()) == pytest.approx(24.3e6, rel=1e-2)


def test_prompt_rearrange_is_a_plain_dot_product():
    from mp_deploy.ops import norm_relu_rearrange, prompt_rearrange
    f, p = torch.randn(2, 8, 3, 5), torch.randn(2, 4, 8)
    ref = (f[:, None] * p[:, :, :, None, None]).sum(2)
    torch.testing.assert_close(prompt_rearrange(f, p), ref)
    w, b = torch.rand(8) + 0.5, torch.randn(8)
    y = F.relu(F.group_norm(f, 2, w, b, 1e-5))
    torch.testing.assert_close(norm_relu_rearrange(f, w, b, 2, 1e-5, p), prompt_rearrange(y, p))
