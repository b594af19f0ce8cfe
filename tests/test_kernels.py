"""The Triton kernels (mp_deploy.kernels) against the plain-PyTorch references (mp_deploy.ops), and the torch ops.

With CUDA the launchers run on the GPU. Without it they run under Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1, set below before triton is imported; CI sets it too): slow, so shapes are small, but
they still cover the edges: channels not a multiple of the channel block, odd H x W, several HW tiles,
batch 1 and 3, 1 / 17 / 50 / 150 prompts, empty trailing statistics chunks.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

from helpers import run as run_helper  # noqa: E402
from mp_deploy import ops  # noqa: E402
from mp_deploy.errors import UsageError  # noqa: E402
from mp_deploy.kernels import HAS_TRITON  # noqa: E402 (registers torch.ops.mp_deploy.*)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# assert_close (atol, rtol) of kernel vs reference; the reference runs in fp32 on the same (rounded) inputs.
# fp32: summation order only. fp16 / bf16: the output's rounding (half an ulp: 2^-11 / 2^-8 relative), the
# reference's own double rounding (group_norm_act rounds before SiLU) and, on GPU, the normalised activations
# rounded to 16 bits for the tensor-core dot; about 2 ulps of relative slack.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1e-2, 1.6e-2),
}


def _kernels_runnable() -> bool:
    if not HAS_TRITON:
        return False
    from triton.runtime import JITFunction

    from mp_deploy.kernels import group_stats

    # compiled kernels need CUDA; on CPU they must have been created under the interpreter
    return DEVICE == "cuda" or not isinstance(group_stats._group_stats_kernel, JITFunction)


needs_kernels = pytest.mark.skipif(
    not _kernels_runnable(),
    reason="needs triton, and CUDA or TRITON_INTERPRET=1 set before mp_deploy.kernels was first imported")


def _randn(*shape, dtype=torch.float32, scale=1.0, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale + shift).to(dtype=dtype, device=DEVICE)


def _affine(channels, dtype, seed=1):
    return (_randn(channels, dtype=dtype, scale=0.5, shift=1.0, seed=seed),
            _randn(channels, dtype=dtype, scale=0.5, seed=seed + 1))


def _assert_matches(actual, expected, dtype):
    atol, rtol = TOLERANCES[dtype]
    assert actual.dtype == dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


# (shape, groups, silu): C=48/80 are not multiples of the 2048-element blocks' channel spans; 33x33 with 8
# groups gives 4356-element rows: several blocks per row and, in the split path, an empty last chunk
GROUP_NORM_CASES = [
    ((1, 48, 7, 9), 16, True),
    ((3, 80, 13, 5), 16, False),
    ((1, 64, 4, 4), 32, True),
    ((1, 32, 33, 33), 8, True),
    ((2, 32, 50), 16, False),  # (B, C, L): any trailing dims
]


def _case_id(case) -> str:
    shape, *rest = case
    return "x".join(map(str, shape)) + "".join(f"-{r}" for r in rest)


def _group_norm_path(path: str, monkeypatch) -> bool:
    """`fused` for group_norm_act. fused-two-pass: rows longer than one register tile, as in the TensorRT
    plugin's loop (FUSED_MAX_GROUP lowered so that the test rows exceed it)."""
    from mp_deploy.kernels import group_norm

    if path == "fused-two-pass":
        monkeypatch.setattr(group_norm, "FUSED_MAX_GROUP", 8)
    return path != "split"


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", ["fused", "fused-two-pass", "split"])
@pytest.mark.parametrize("shape,groups,silu", GROUP_NORM_CASES, ids=[_case_id(c) for c in GROUP_NORM_CASES])
def test_group_norm_act_matches_reference(shape, groups, silu, path, dtype, monkeypatch):
    from mp_deploy.kernels.group_norm import group_norm_act

    fused = _group_norm_path(path, monkeypatch)

    x = _randn(*shape, dtype=dtype, scale=2.0, shift=0.5)
    weight, bias = _affine(shape[1], dtype)
    out = group_norm_act(x, weight, bias, groups, 1e-5, silu, fused=fused)
    with ops.use_kernels(False):
        ref = ops.group_norm_act(x.float(), weight.float(), bias.float(), groups, 1e-5, silu)
    _assert_matches(out, ref, dtype)


@needs_kernels
@pytest.mark.parametrize("path", ["fused", "fused-two-pass", "split"])
def test_group_norm_statistics_survive_large_mean(path, monkeypatch):
    """|mean| >> std: naive E[x^2] - E[x]^2 in fp32 would lose most digits of the variance."""
    from mp_deploy.kernels.group_norm import group_norm_act

    fused = _group_norm_path(path, monkeypatch)

    x = _randn(2, 32, 17, 17, scale=0.01, shift=300.0)
    weight, bias = _affine(32, torch.float32)
    out = group_norm_act(x, weight, bias, 8, 1e-6, False, fused=fused)
    ref = torch.nn.functional.group_norm(x.double(), 8, weight.double(), bias.double(), 1e-6)
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=2e-3)


@needs_kernels
@pytest.mark.parametrize("programs,block", [(512, 1024), (4096, 256), (2, 4096)])
def test_group_stats_partial_moments_combine_to_the_group_moments(programs, block):
    """The statistics pass alone, at other launch configurations (benchmark sweeps): many chunks, few."""
    from mp_deploy.kernels.group_stats import group_stats

    x = _randn(3, 48, 11, 13, dtype=torch.float16, scale=2.0, shift=3.0)
    stats = group_stats(x, 16, programs=programs, block=block).double().cpu()
    count, mean_d, m2 = stats[:, 0], stats[:, 1], stats[:, 2]
    rows = x.double().cpu().reshape(3 * 16, -1)
    n = rows.shape[1]
    assert torch.equal(count.sum(1), torch.full((48,), float(n), dtype=torch.float64))
    mean = rows[:, 0] + (count * mean_d).sum(1) / n  # partial means are relative to the row's first value
    var = (m2 + count * (mean_d - (mean - rows[:, 0])[:, None]) ** 2).sum(1) / n
    torch.testing.assert_close(mean, rows.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var, rows.var(1, unbiased=False), atol=1e-5, rtol=1e-5)


# (x shape, prompts, spatial tile): C=48/80 are not multiples of BLOCK_C=64; 12x12=144 positions span
# 16-wide tiles, or three 64-wide ones with a masked end; 150 prompts need three 64-prompt tiles, 17 a
# 32-prompt tile, 1 a (masked) 16-prompt tile; None = the launcher's own tile choice
NORM_RELU_REARRANGE_CASES = [
    ((1, 48, 7, 9), 1, None),
    ((3, 80, 13, 5), 50, None),
    ((3, 80, 13, 5), 50, 128),
    ((2, 32, 4, 4), 150, None),
    ((1, 48, 12, 12), 17, None),
    ((1, 48, 12, 12), 17, 64),
]


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,n_prompts,tile_hw", NORM_RELU_REARRANGE_CASES,
                         ids=[_case_id(c) for c in NORM_RELU_REARRANGE_CASES])
@pytest.mark.parametrize("single_launch", [False, True], ids=["two-launch", "single-launch"])
def test_norm_relu_rearrange_matches_reference(shape, n_prompts, tile_hw, dtype, single_launch):
    """Both paths. The single launch runs on 4 persistent programs here (several tiles each), and its
    statistics' split has empty tiles where the map is not a power of two of tiles (13x5 = 5 tiles of 16)."""
    from mp_deploy.kernels.norm_relu_rearrange import norm_relu_rearrange

    batch, channels = shape[:2]
    x = _randn(*shape, dtype=dtype, scale=2.0, shift=0.5)
    weight, bias = _affine(channels, dtype)
    prompts = _randn(batch, n_prompts, channels, dtype=dtype, scale=channels ** -0.5, seed=3)
    out = norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts, tile_hw=tile_hw, single_launch=single_launch,
                              programs=4 if single_launch else None)
    with ops.use_kernels(False):
        ref = ops.norm_relu_rearrange(x.float(), weight.float(), bias.float(), 16, 1e-5, prompts.float())
    _assert_matches(out, ref, dtype)


@needs_kernels
@pytest.mark.parametrize("block_c", [16, 32, 128])
def test_norm_relu_rearrange_channel_blocks(block_c):
    """Other channel blocks (benchmark sweeps): 80 channels = 5 x 16, 2.5 x 32, or one masked block of 128."""
    from mp_deploy.kernels.norm_relu_rearrange import norm_relu_rearrange

    x = _randn(3, 80, 13, 5, dtype=torch.float16, scale=2.0, shift=0.5)
    weight, bias = _affine(80, torch.float16)
    prompts = _randn(3, 50, 80, dtype=torch.float16, scale=80 ** -0.5, seed=3)
    out = norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts, tile_hw=32, block_c=block_c)
    with ops.use_kernels(False):
        ref = ops.norm_relu_rearrange(x.float(), weight.float(), bias.float(), 16, 1e-5, prompts.float())
    _assert_matches(out, ref, torch.float16)


@needs_kernels
@pytest.mark.parametrize("programs", [1, 3, None], ids=["1-program", "3-programs", "default-programs"])
def test_single_launch_moments_survive_large_mean(programs):
    """The single launch's per-tile moments (shifted by each group's first value) keep fp32 precision when
    |mean| >> std, on any number of persistent programs (1: one program does every tile)."""
    from mp_deploy.kernels.norm_relu_rearrange import norm_relu_rearrange

    x = _randn(2, 32, 9, 11, scale=0.01, shift=300.0)
    weight, bias = _affine(32, torch.float32)
    prompts = _randn(2, 5, 32, scale=32 ** -0.5, seed=3)
    out = norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts, single_launch=True, programs=programs)
    # in float64 (ops.norm_relu_rearrange normalises in fp32: 3.7e-3 off here, the kernel 5e-7)
    y = torch.relu(torch.nn.functional.group_norm(x.double(), 16, weight.double(), bias.double(), 1e-5))
    ref = torch.einsum("bchw,bnc->bnhw", y, prompts.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@needs_kernels
def test_single_launch_refuses_a_map_of_too_many_tiles():
    from mp_deploy.kernels.norm_relu_rearrange import SINGLE_MAX_TILES, norm_relu_rearrange

    x = _randn(1, 16, 16, SINGLE_MAX_TILES + 1)  # 16 x 129 pixels: 129 tiles of 16
    weight, bias = _affine(16, torch.float32)
    with pytest.raises(ValueError, match="too large for the single launch"):
        norm_relu_rearrange(x, weight, bias, 16, 1e-5, _randn(1, 3, 16), tile_hw=16, single_launch=True)


def _inputs(dtype=torch.float32, device=DEVICE):
    x = _randn(2, 32, 5, 7, dtype=dtype).to(device)
    weight, bias = (t.to(device) for t in _affine(32, dtype))
    prompts = _randn(2, 10, 32, dtype=dtype, scale=32 ** -0.5, seed=3).to(device)  # model-like magnitudes
    return x, weight, bias, prompts


# on CPU the op's own fp16 math is the reference's, which the kernel tolerances do not describe: fp32 there
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if DEVICE == "cuda" else [torch.float32], ids=str)
def test_ops_on_device_match_reference(dtype):
    """The registered ops (Triton through triton_op on CUDA, the plain-PyTorch op on CPU) against the math written
    out here in float64: GroupNorm, ReLU and the prompt dot product; GroupNorm and SiLU."""
    x, weight, bias, prompts = _inputs(dtype)
    xd, wd, bd = x.double().cpu(), weight.double().cpu(), bias.double().cpu()
    ref_nrr = torch.einsum("bchw,bnc->bnhw", torch.relu(torch.nn.functional.group_norm(xd, 16, wd, bd, 1e-5)),
                           prompts.double().cpu())
    ref_gn = torch.nn.functional.silu(torch.nn.functional.group_norm(xd, 8, wd, bd, 1e-5))
    _assert_matches(torch.ops.mp_deploy.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts),
                    ref_nrr.float().to(x.device), dtype)
    _assert_matches(torch.ops.mp_deploy.group_norm_act(x, weight, bias, 8, 1e-5, True), ref_gn.float().to(x.device),
                    dtype)


def test_kernel_switch_is_scoped_and_checks_names(monkeypatch):
    """use_kernels routes only the ops in `only`, only inside its block; a nested block restores the outer one."""
    calls = []

    def spy(*args):
        calls.append(args)
        return ops.norm_relu_rearrange_reference(*args)

    monkeypatch.setitem(ops._kernels, "norm_relu_rearrange", spy)
    x, weight, bias, prompts = _inputs(device="cpu")
    with ops.use_kernels(only=("norm_relu_rearrange",), any_device=True):
        ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)
        with ops.use_kernels(False):
            ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)
        ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)
        ops.group_norm_act(x, weight, bias, 8, 1e-5, True)  # not in `only`
    ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)
    assert len(calls) == 2
    with pytest.raises(UsageError, match="unknown kernel op"):
        with ops.use_kernels(only=("group_norm",)):
            pass


def test_switched_on_without_registered_kernels_says_to_import_them(monkeypatch):
    monkeypatch.setattr(ops, "_kernels", {})
    x, weight, bias, _ = _inputs(device="cpu")
    with ops.use_kernels(any_device=True):
        with pytest.raises(ops.KernelNotRegistered, match="import mp_deploy.kernels"):
            ops.group_norm_act(x, weight, bias, 8, 1e-5, True)


def test_ops_import_nothing_of_the_kernels():
    assert run_helper("ops_alone").strip() == "ok"


def test_cpu_registration_is_the_reference():
    x, weight, bias, prompts = _inputs(device="cpu")
    with ops.use_kernels(False):
        assert torch.equal(torch.ops.mp_deploy.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts),
                           ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts))
        assert torch.equal(torch.ops.mp_deploy.group_norm_act(x.half(), weight, bias, 8, 1e-6, False),
                           ops.group_norm_act(x.half(), weight, bias, 8, 1e-6, False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_fake_and_meta_shapes(dtype):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, weight, bias, prompts = _inputs(dtype, device="cpu")
    mode = FakeTensorMode()
    fx, fw, fb, fp = (mode.from_tensor(t) for t in (x, weight, bias, prompts))
    with mode:
        nrr = torch.ops.mp_deploy.norm_relu_rearrange(fx, fw, fb, 16, 1e-5, fp)
        gn = torch.ops.mp_deploy.group_norm_act(fx, fw, fb, 8, 1e-5, True)
    assert (tuple(nrr.shape), nrr.dtype) == ((2, 10, 5, 7), dtype)
    assert (tuple(gn.shape), gn.dtype) == ((2, 32, 5, 7), dtype)
    meta = [t.to("meta") for t in (x, weight, bias, prompts)]
    out = torch.ops.mp_deploy.norm_relu_rearrange(meta[0], meta[1], meta[2], 16, 1e-5, meta[3])
    assert (out.device.type, tuple(out.shape), out.dtype) == ("meta", (2, 10, 5, 7), dtype)


class _Neck(torch.nn.Module):
    """The depth neck's tail: conv -> fused GroupNorm+ReLU+rearrangement, and a GroupNorm+SiLU."""

    def __init__(self, channels=32, groups=16):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = torch.nn.GroupNorm(groups, channels)

    def forward(self, x, prompts):
        h = torch.ops.mp_deploy.group_norm_act(x, self.norm.weight, self.norm.bias, 8, 1e-5, True)
        return torch.ops.mp_deploy.norm_relu_rearrange(self.conv(h), self.norm.weight, self.norm.bias,
                                                       self.norm.num_groups, self.norm.eps, prompts)


def test_export_keeps_the_ops_on_cpu():
    model = _Neck().eval()
    x, _, _, prompts = _inputs(device="cpu")
    program = torch.export.export(model, (x, prompts))
    targets = {node.target for node in program.graph.nodes if node.op == "call_function"}
    assert torch.ops.mp_deploy.norm_relu_rearrange.default in targets
    assert torch.ops.mp_deploy.group_norm_act.default in targets
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x, prompts), model(x, prompts))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="AOTInductor compiles the Triton kernels for CUDA only")
def test_aoti_package_contains_the_triton_kernels(tmp_path):
    """Built here, then loaded and run in a fresh process, as a deployment would (a crash there fails the test)."""
    import zipfile

    model = _Neck().cuda().half().eval()
    x, _, _, prompts = _inputs(torch.float16, device="cuda")
    program = torch.export.export(model, (x, prompts))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "neck.pt2"))
    with zipfile.ZipFile(path) as package:
        blob = b"".join(package.read(name) for name in package.namelist())
    assert b"_norm_relu_rearrange_kernel" in blob and b"_group_stats_kernel" in blob
    with torch.no_grad():
        torch.save({"x": x, "prompts": prompts, "expected": model(x, prompts)}, tmp_path / "io.pt")
    out = run_helper("load_aoti_package", tmp_path / "io.pt", path)
    assert out.strip().endswith("ok")


def test_ops_register_without_triton():
    assert run_helper("without_triton").strip() == "ok"


def _has_nvidia_backend() -> bool:
    if not HAS_TRITON:
        return False
    from triton.backends import backends

    return "nvidia" in backends


@pytest.mark.skipif(not _has_nvidia_backend(), reason="needs triton with its NVIDIA backend")
def test_kernels_compile_to_ptx_for_hopper():
    """Every kernel through Triton's real compiler (sm_90, no GPU needed), via the TensorRT plugins' specs.

    The interpreter tests do not run the compiler: this catches what only it rejects (tl.dot shapes, types).
    """
    out = run_helper("compile_ptx")
    assert out.strip().endswith("ok")


@pytest.mark.skipif(not _has_nvidia_backend(), reason="needs triton with its NVIDIA backend")
def test_reduction_loops_keep_several_loads_in_flight():
    """The statistics loop and the rearrangement's channel loop (also in the single launch) compile to asynchronous copies (software
    pipelining) for sm_90, with the pointer alignment and divisible sizes the JIT specialises on. A loop
    without them waits out one memory round trip per block: the latency-bound pass the GPU benchmark found."""
    out = run_helper("pipelined_loads")
    counts = dict(zip(out.split()[::2], map(int, out.split()[1::2])))
    assert counts["stats"] > 0 and counts["apply"] > 0 and counts["single"] > 0, out
    # the single launch's grid barrier: a gpu-scope release on arrival, gpu-scope acquire reads while it waits
    assert counts["release"] == 1 and counts["acquire"] >= 1, out


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_eager_launches_skip_the_tracing_wrapper():
    """Eager calls launch the kernel itself; under tracing (fake tensors, dispatch modes) wrap_triton's wrapper."""
    out = run_helper("eager_launch")
    assert out.strip().endswith("ok")


@pytest.mark.skipif(not _has_nvidia_backend(), reason="needs triton with its NVIDIA backend")
def test_mutation_analysis_sees_only_the_outputs_written():
    """torch.export / AOTInductor analyse every Triton kernel call for the tensors it writes."""
    assert run_helper("mutation_analysis").strip().endswith("ok")
