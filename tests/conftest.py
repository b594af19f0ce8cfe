"""What the test files share: a hermetic run (every compile cache and workspace in one temporary folder of this run,
removed at its end) and the artifacts built once per session, on the CPU in fp32 whatever the machine has.

Nothing is written outside temporary folders: Inductor's and Triton's caches, mp-deploy's demo-artifact cache,
PyTriton's workspace and matplotlib's config go to the run's folder (so a rerun compiles from scratch, as CI's
first run does); pytest's own cache is off (pyproject addopts).
"""
import os
import shutil
import tempfile
from pathlib import Path

# every cache of this run under one temporary folder, set before anything is imported that compiles or caches
# (subprocesses of the tests inherit it)
_RUN_FOLDER = Path(tempfile.mkdtemp(prefix="mp-deploy-tests-"))
CACHES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton", "MP_DEPLOY_CACHE": "mp-deploy",
          "PYTRITON_HOME": "pytriton", "MPLCONFIGDIR": "matplotlib", "XDG_CACHE_HOME": "xdg-cache"}
for _variable, _name in CACHES.items():
    os.environ[_variable] = str(_RUN_FOLDER / _name)

import pytest  # noqa: E402
import torch  # noqa: E402

from mp_deploy import tasks  # noqa: E402
from mp_deploy.export.build_engine import BuildSpec, build  # noqa: E402


def pytest_unconfigure(config):
    shutil.rmtree(_RUN_FOLDER, ignore_errors=True)

SIDE = {"depth": 128, "seg": 64, "pose": 64}


def spec(task, out, backend, **kw) -> BuildSpec:
    side = (SIDE[task],) * 3
    # model_size: seeded random weights of the tiny size (build's default is the trained demo model); device and
    # precision pinned: on a CUDA machine build would otherwise make fp16 CUDA artifacts under other names
    return BuildSpec(task=task, backend=backend, output=str(out), runs=1, batch=(1, 1, 1), height=side, width=side,
                     device="cpu", precision="fp32", **({"model_size": "tiny"} | kw))


BACKENDS = {"depth": "all", "seg": "onnx", "pose": "onnx"}  # CI time: AOTInductor CPU builds take minutes each
PRESET = {t.name: t.default_preset for t in tasks.all_tasks()}


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(task, backend) -> (out_dir, artifacts) from `build(BuildSpec(task, backend))`."""
    cache = {}

    def get(task, backend=None):
        backend = backend or BACKENDS[task]
        if (task, backend) not in cache:
            out = tmp_path_factory.mktemp(f"{task}-{backend}")
            cache[task, backend] = (out, build(spec(task, out, backend)))
        return cache[task, backend]

    return get


@pytest.fixture(scope="session")
def depth_onnx(tmp_path_factory) -> Path:
    """The bundled depth demo exported to ONNX at its 128x128 window, batch 1..4: one build per session (minutes
    on a CPU) for the predict and serve tests."""
    from mp_deploy import demo

    out = tmp_path_factory.mktemp("depth-onnx")
    artifacts = build(BuildSpec(task="depth", checkpoint=str(demo.checkpoint("depth")), backend="onnx",
                                output=str(out), batch=(1, 2, 4), height=(128,) * 3, width=(128,) * 3, runs=1,
                                device="cpu", precision="fp32"))
    assert [a.ok for a in artifacts] == [True], [a.status for a in artifacts]
    return artifacts[0].path


@pytest.fixture
def one_thread():
    """torch on one CPU thread inside the test (steadier on a busy machine), its thread count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
