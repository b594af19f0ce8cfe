"""Fixtures shared by the test files: the tiny artifacts built once per session."""
from pathlib import Path

import pytest

from mp_deploy.configs import DEFAULT_PRESET
from mp_deploy.export.build_engine import BuildSpec, build

SIDE = {"depth": 128, "seg": 64, "pose": 64}


def spec(task, out, backend, **kw) -> BuildSpec:
    side = (SIDE[task],) * 3
    # model_size: seeded random weights of the tiny size (build's default is the trained demo model)
    return BuildSpec(task=task, backend=backend, out_dir=str(out), runs=1, batch=(1, 1, 1), height=side, width=side,
                     **({"model_size": "tiny"} | kw))


BACKENDS = {"depth": "all", "seg": "onnx", "pose": "onnx"}  # CI time: AOTInductor CPU builds take minutes each
PRESET = DEFAULT_PRESET


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
                                out_dir=str(out), batch=(1, 2, 4), height=(128,) * 3, width=(128,) * 3, runs=1))
    assert [a.ok for a in artifacts] == [True], [a.status for a in artifacts]
    return artifacts[0].path
