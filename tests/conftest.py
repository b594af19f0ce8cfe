"""Fixtures shared by the test files: the tiny artifacts built once per session."""
import pytest

from mp_deploy.configs import DEFAULT_PRESET
from mp_deploy.export.build_engine import BuildSpec, build

SIDE = {"depth": 128, "seg": 64, "pose": 64}


def spec(task, out, backend, **kw) -> BuildSpec:
    side = (SIDE[task],) * 3
    return BuildSpec(task=task, backend=backend, out_dir=str(out), runs=1, batch=(1, 1, 1), height=side, width=side,
                     **kw)


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
