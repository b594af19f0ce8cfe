"""`--backend auto` among existing artifacts (mp_deploy.backends.auto_choice / choose, what predict's --engine DIR and
serve's demo artifacts run): on a CPU machine the fastest that `mp-deploy build` measured on this machine, else the
stated order (backend rank, then fp32, fp16, int8); on a GPU machine the rank order; never an artifact that failed
its parity check while another is left. The rule is tested on sidecars written here (no build: the choice reads
sidecars only), and once on the session's real build, whose sidecars must hold this machine's measurement."""
import json
from pathlib import Path

import pytest

from mp_deploy import backends
from mp_deploy.artifacts import read_sidecar
from mp_deploy.cpu_threads import cpu_threads
from mp_deploy.errors import UsageError
from mp_deploy.prediction.runner import pick_artifact
from mp_deploy.util import device_name

HERE = "CPU test machine A"
INPUT = [1, 3, 128, 128]


def meta(backend, precision="fp32", measured=None, ok=True, task="depth", device="cpu"):
    return {"task": task, "backend": backend, "precision": precision, "device": device,
            "parity": {"ok": ok}, "measured": measured or {}}


def timed(ms, machine=HERE, threads=1, shape=INPUT):
    return {machine: {"median_ms": ms, "threads": threads, "input": shape, "runs": 5}}


def folder_of(tmp_path, items: dict[str, dict]) -> Path:
    """Artifacts named as build names them (empty files: the choice reads sidecars only) with these sidecars."""
    for name, m in items.items():
        (tmp_path / name).write_bytes(b"")
        (tmp_path / f"{name}.json").write_text(json.dumps(m))
    return tmp_path


def three(onnx_ms=40.0, int8_ms=30.0, aoti_ms=50.0, **kw):
    """Three CPU artifacts where the rank order (AOTInductor before ONNX) and the measurements disagree."""
    return [(Path("d-fp32-cpu.pt2"), meta("aoti", measured=timed(aoti_ms, **kw))),
            (Path("d-fp32.onnx"), meta("onnx", measured=timed(onnx_ms, **kw))),
            (Path("d-int8.onnx"), meta("onnx", "int8", measured=timed(int8_ms, **kw)))]


def test_cpu_picks_the_fastest_measured_on_this_machine():
    # why: the point of item 4: measurements on this machine decide, not the rank (which would give aoti)
    path, why = backends.auto_choice(three(), HERE, 1, gpu=False)
    assert path.name == "d-int8.onnx", why
    assert "fastest measured" in why and "d-int8.onnx 30.0 ms" in why and "d-fp32-cpu.pt2 50.0 ms" in why
    path, _ = backends.auto_choice(three(onnx_ms=20.0), HERE, 1, gpu=False)
    assert path.name == "d-fp32.onnx"  # the numbers, not a fixed preference for int8


def test_another_machine_falls_back_to_the_stated_order():
    # why: a latency measured on another CPU says nothing here; the fallback is the stated rank order
    path, why = backends.auto_choice(three(), "CPU another machine", 1, gpu=False)
    assert path.name == "d-fp32-cpu.pt2", why
    assert "no build measurement on this machine (CPU another machine)" in why and "stated order" in why


def test_one_missing_measurement_falls_back():
    # why: an unmeasured artifact may be the fastest; the rule does not guess from the others
    found = three()
    found[0] = (found[0][0], meta("aoti"))
    path, why = backends.auto_choice(found, HERE, 1, gpu=False)
    assert path.name == "d-fp32-cpu.pt2" and "d-fp32-cpu.pt2" in why.split(":")[0], why


def test_other_thread_counts_fall_back():
    # why: measured at 2 threads, a run on 1 thread may rank them differently (the shared-machine collapse)
    path, why = backends.auto_choice(three(threads=2), HERE, 1, gpu=False)
    assert path.name == "d-fp32-cpu.pt2" and "other thread counts" in why, why


def test_without_measurements_fp32_before_int8_within_a_backend():
    # why: the stated order's second key: the exact precision first when nothing was measured
    found = [(Path("a-int8.onnx"), meta("onnx", "int8")), (Path("b-fp32.onnx"), meta("onnx"))]  # names sort int8 first
    assert backends.auto_choice(found, HERE, 1, gpu=False)[0].name == "b-fp32.onnx"


def test_a_failed_parity_check_is_never_chosen_while_another_is_left():
    # why: a fast artifact with a wrong output must not be served because it is fast
    found = three()
    found[2] = (found[2][0], meta("onnx", "int8", measured=timed(10.0), ok=False))
    path, why = backends.auto_choice(found, HERE, 1, gpu=False)
    assert path.name == "d-fp32.onnx" and "failed parity check: d-int8.onnx" in why, why


def test_gpu_machines_keep_their_rank_order():
    # why: the GPU rule is unchanged: rank, whatever was measured
    found = three() + [(Path("d-fp16.engine"), meta("tensorrt", "fp16", measured=timed(99.0), device="cuda"))]
    path, why = backends.auto_choice(found, HERE, 1, gpu=True)
    assert path.name == "d-fp16.engine" and "rank" in why, why


def test_pick_artifact_reads_the_sidecars_of_a_folder(tmp_path, monkeypatch):
    # why: predict's --engine DIR goes through the same rule, with this machine's name and thread count, and
    # --backend / --precision narrow the candidates
    here, threads = device_name("cpu"), cpu_threads()
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    folder = folder_of(tmp_path, {
        "depth-x-tiny-fp32-cpu.pt2": meta("aoti", measured=timed(50.0, here, threads)),
        "depth-x-tiny-fp32.onnx": meta("onnx", measured=timed(40.0, here, threads)),
        "depth-x-tiny-int8.onnx": meta("onnx", "int8", measured=timed(30.0, here, threads)),
        "seg-x-tiny-fp32.onnx": meta("onnx", task="seg", measured=timed(1.0, here, threads)),
    })
    assert pick_artifact(folder, "auto", "depth").name == "depth-x-tiny-int8.onnx"
    assert pick_artifact(folder, "auto", "depth", "fp32").name == "depth-x-tiny-fp32.onnx"
    assert pick_artifact(folder, "aoti", "depth").name == "depth-x-tiny-fp32-cpu.pt2"
    with pytest.raises(UsageError, match="no artifact for depth task, backend tensorrt"):
        pick_artifact(folder, "tensorrt", "depth")


def test_the_build_records_this_machine_and_auto_picks_its_fastest(built, monkeypatch):
    # why: the choice is only as good as what build records: each artifact of a real build holds this machine's
    # median at this run's thread count, and `choose` on that folder returns the smallest of them
    out, artifacts = built("depth")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # CPU artifacts: the CPU rule
    here, threads = device_name("cpu"), cpu_threads()
    times = {}
    for a in artifacts:
        record = read_sidecar(a.path)["measured"][here]
        assert record["threads"] == threads and record["input"] == [1, 3, 128, 128], record
        assert record["median_ms"] == pytest.approx(a.median_ms)
        times[a.path.name] = record["median_ms"]
    chosen, why = backends.choose(out, task="depth")
    assert chosen.name == min(times, key=times.get), why


def test_serve_demo_artifacts_build_auto_and_serve_the_fastest(tmp_path, monkeypatch):
    # why: serve's demo models used to be a literal ONNX build on a CPU; they follow `build --backend auto` now and
    # serve what `--backend auto` picks among that build's artifacts (an older file in the cache is not served)
    from mp_deploy.export import build_engine
    from mp_deploy.serve import demo_artifacts

    here, threads = device_name("cpu"), cpu_threads()
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    folder = folder_of(tmp_path, {
        "depth-s-tiny-fp32-cpu.pt2": meta("aoti", measured=timed(45.0, here, threads)),  # first by rank, slower
        "depth-s-tiny-fp32.onnx": meta("onnx", measured=timed(35.0, here, threads)),
        "depth-old-tiny-fp32.onnx": meta("onnx", measured=timed(1.0, here, threads)),  # not this build's
    })
    asked = []

    def fake_build(spec):
        asked.append(spec)
        return [build_engine.Artifact(folder / name, backend, 1.0, 0.0, 1.0)
                for name, backend in (("depth-s-tiny-fp32.onnx", "onnx"), ("depth-s-tiny-fp32-cpu.pt2", "aoti"))]

    monkeypatch.setattr(build_engine, "build", fake_build)
    assert [p.name for p in demo_artifacts.demo_artifacts(["depth"], folder)] == ["depth-s-tiny-fp32.onnx"]
    assert [s.backend for s in asked] == ["auto"]
