"""Data sets against hostile files: dataset.json values (seeded fuzz), pose annotation records (seeded fuzz and
the cases a probe found), COCO annotations, special files where data belongs, missing folders, data that does not
fit the model, typed errors from DataLoader workers, and eval --output. Every outcome is a sample, a counted skip
or a typed error of one line: never a traceback, never a hang (special files run under an alarm)."""
import contextlib
import json
import logging
import multiprocessing
import os
import random
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from mp_deploy import cli
from mp_deploy.data import build_dataset
from mp_deploy.data.base import SampleDataset, one_line, one_line_errors, read_list
from mp_deploy.data.pose import coco_keypoints
from mp_deploy.errors import DataError, MpDeployError
from mp_deploy.evaluation import Stream, ignore_sigterm
from mp_deploy.images import write_png
from mp_deploy.train import build
from mp_deploy.train.recipes import get_recipe

SIDE = 64


@contextlib.contextmanager
def no_hang(seconds=120):
    """Fail (instead of hanging the suite) when the block blocks, e.g. in open() of a FIFO: the alarm's handler
    raises, which interrupts the system call."""
    def expire(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def image(path, seed=0, side=SIDE):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


def folder(root, task, manifest=None, n=2, split="train"):
    """A custom folder of `n` 64x64 images with valid targets (depth 0.5-1 m, labels 0/1, one person each)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"task": task} | (manifest or {})))
    for i in range(n):
        image(root / split / "images" / f"{i}.png", i)
        if task == "depth":
            write_png(root / split / "depth" / f"{i}.png", np.full((SIDE, SIDE), 500 + 100 * i, np.uint16))
        elif task == "seg":
            labels = np.zeros((SIDE, SIDE), np.uint8)
            labels[:, SIDE // 2:] = 1
            write_png(root / split / "labels" / f"{i}.png", labels)
        else:
            k = len((manifest or {}).get("keypoints", range(17)))
            write_people(root / split / "keypoints" / f"{i}.json", [{"keypoints": person()[:k]}])
    return root


def person():
    kps = [[0, 0, 0] for _ in range(17)]
    for k, (x, y) in enumerate([(30, 10), (28, 9), (32, 9), (26, 10), (34, 10), (24, 20), (36, 20), (22, 30),
                                (38, 30), (20, 40), (40, 40), (26, 40), (34, 40), (26, 50), (34, 50), (26, 60),
                                (34, 60)]):
        kps[k] = [x, y, 2]
    return kps


def dumps(document) -> str:
    """JSON with an infinite float spelled 1e400 (what a hostile file holds), not as the Infinity that JSON does
    not allow: files.parse_json refuses either, so such a file is one bad file, like one holding NaN."""
    return json.dumps(document).replace("Infinity", "1e400")


def write_people(path, people, raw=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else dumps({"people": people}))


def load_everything(ds, epochs=2):
    """Every sample of `ds` over `epochs` epochs: (samples with an image, skip markers)."""
    good = markers = 0
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            good += "image" in s
            markers += "image" not in s
    return good, markers


def typed_one_line(call):
    """call() -> ("ok", value) or ("error", message) for a typed error of one line; anything else fails."""
    try:
        return "ok", call()
    except MpDeployError as e:
        assert "\n" not in str(e) and str(e), repr(e)
        return "error", str(e)


# ------------------------------------------------------------------ dataset.json values

HOSTILE = [None, True, 0, -1, 1, 1.5, 1e308, -1e308, 10 ** 400, "", "x", "mm", [], [1], [1, 2], [1, 2, 3],
           [[1, 2]], [-1, 5], [64, 64], [0, 0], [10 ** 6, 64], [64.5, 64], {"a": 1}, ["a"] * 300, ["a", "a"],
           ["a", "b", "c"], [[0, 1], [1, 1]], [[0, 99]], list(range(17)), ["k"] * 17, [0.1] * 17, [-0.1] * 17,
           "nyu", "ade20k", "coco", "synthetic", 255, 65536, 7]
KEYS = {"depth": ["depth_scale", "max_depth", "protocol", "task"],
        "seg": ["classes", "ignore_index", "scale", "crop", "protocol", "task"],
        "pose": ["keypoints", "flip_pairs", "sigmas", "input_size", "upper_body", "task"]}


def test_dataset_json_fuzz_gives_a_sample_or_one_typed_line(tmp_path):
    """Every key of each task's dataset.json set to each hostile value, then seeded random pairs of them: the data
    set (training or held out) builds and loads, or refuses with one typed line naming the folder."""
    base = {"depth": {}, "seg": {"classes": ["bg", "fg"]}, "pose": {}}
    roots = {task: folder(tmp_path / task, task, n=1) for task in KEYS}
    cases = [(task, {key: value}) for task in KEYS for key in KEYS[task] for value in HOSTILE]
    rng = random.Random(0)
    for _ in range(60):
        task = rng.choice(sorted(KEYS))
        cases.append((task, {key: rng.choice(HOSTILE) for key in rng.sample(KEYS[task], 2)}))
    outcomes = {"ok": 0, "error": 0}
    for n, (task, values) in enumerate(cases):
        root = roots[task]
        (root / "dataset.json").write_text(json.dumps({"task": task} | base[task] | values))
        train = n % 2 == 0
        options = {"crop": (32, 32)} if task == "depth" and train else {}

        def run():
            ds = build_dataset("folder", "train", root=root, augment=train, **options)
            return load_everything(ds, epochs=1)
        kind, value = typed_one_line(run)
        outcomes[kind] += 1
        if kind == "error":
            assert str(root) in value, (task, values, value)
    assert outcomes["ok"] > 30 and outcomes["error"] > 300, outcomes  # the fuzz met both, many times


@pytest.mark.parametrize("task,manifest,message", [
    ("depth", {"depth_scale": "mm"}, "'depth_scale' must be a finite number"),
    ("depth", {"depth_scale": 0}, "'depth_scale' must be positive"),
    ("depth", {"depth_scale": [1000]}, "'depth_scale' must be a finite number"),
    ("depth", {"max_depth": -1}, "'max_depth' must be positive"),
    ("seg", {"classes": "abc"}, "'classes' must be a list"),
    ("seg", {"classes": ["c"] * 1000}, "'classes' must be a list of 1 to 255 names"),
    ("seg", {"classes": ["a", "b"], "scale": "big"}, "'scale' must be two integers"),
    ("seg", {"classes": ["a", "b"], "ignore_index": "x"}, "'ignore_index' must be an integer"),
    ("pose", {"sigmas": [0.1] * 3}, "'sigmas' must be a list of 17"),
    ("pose", {"flip_pairs": [[0, 17]]}, "'flip_pairs' must be a list"),
])
def test_a_bad_manifest_value_is_one_line_naming_it(tmp_path, task, manifest, message):
    root = folder(tmp_path / "d", task, manifest | ({"classes": ["a", "b"]} if task == "seg" and "classes" not in
                                                    manifest else {}))
    with pytest.raises(DataError) as caught:
        build_dataset("folder", "train", root=root, crop=(32, 32)) if task == "depth" else \
            build_dataset("folder", "train", root=root)
    assert str(root / "dataset.json") in str(caught.value) and message in str(caught.value), str(caught.value)


@pytest.mark.parametrize("task,manifest,preset,message", [
    ("seg", {"classes": ["a", "b", "c"]}, "synthetic-seg", "3 classes, but the synthetic-seg model predicts 7"),
    ("seg", {"classes": [f"c{i}" for i in range(200)]}, "synthetic-seg", "200 classes"),
    ("pose", {"keypoints": ["a", "b", "c"], "sigmas": [0.1] * 3}, "synthetic-pose", "3 keypoints, but"),
    ("depth", {"protocol": "xx"}, "synthetic-depth", "protocol 'xx' is not one of"),
    ("pose", {"input_size": [32, 24]}, "synthetic-pose", "training samples of 32x24"),
])
def test_data_that_does_not_fit_the_model_is_refused(tmp_path, task, manifest, preset, message):
    root = folder(tmp_path / "d", task, manifest)
    recipe = get_recipe(preset, data="folder", crop_h=64, crop_w=64)
    with pytest.raises(DataError, match=message):
        build.dataset(recipe, root, "train", train=True)


@pytest.mark.parametrize("task,missing,message", [
    ("depth", "train/depth", "no such folder (the train split's depth maps)"),
    ("seg", "train/labels", "no such folder (the train split's label maps)"),
    ("pose", "train/keypoints", "no such folder (the train split's keypoint files)"),
    ("depth", "train/images", "no such folder (the train split's images)"),
])
def test_a_missing_folder_is_named(tmp_path, task, missing, message):
    import shutil

    root = folder(tmp_path / "d", task, {"classes": ["a", "b"]} if task == "seg" else {})
    shutil.rmtree(root / missing)
    with pytest.raises(DataError) as caught:
        build_dataset("folder", "train", root=root, crop=(32, 32)) if task == "depth" else \
            build_dataset("folder", "train", root=root)
    assert str(root / missing) in str(caught.value) and message in str(caught.value)


# ------------------------------------------------------------------ pose annotation records

def test_the_probes_bad_pose_records_are_skipped_and_counted(tmp_path, caplog):
    """One bad record each (a keypoint of 1e300, a negative box, visibility 9, a box of 1e308: left out when the
    data set is built, counted in one line; a box outside the image, a NaN or 1e400 (not valid JSON): a bad sample
    each when loaded, named), beside good people; a training run on it finishes and reports both counts."""
    root = folder(tmp_path / "pose", "pose", {"input_size": [64, 64]}, n=2)
    kp = root / "train" / "keypoints"
    bad = {"far": {"keypoints": [[1e300, 10, 2]] + person()[1:]}, "negbox": {"keypoints": person(),
                                                                            "box": [5, 5, -10, 20]},
           "vis9": {"keypoints": [[30, 10, 9]] + person()[1:]}, "huge": {"keypoints": person(), "box": [1, 1, 1e308,
                                                                                                       1e308]}}
    for name, record in bad.items():
        image(root / "train" / "images" / f"{name}.png")
        write_people(kp / f"{name}.json", [record, {"keypoints": person()}])
    image(root / "train" / "images" / "outside.png")
    write_people(kp / "outside.json", [{"keypoints": person(), "box": [500, 500, 10, 10]}])
    image(root / "train" / "images" / "nan.png")
    write_people(kp / "nan.json", None, raw='{"people": [{"keypoints": [[NaN, 1, 2]]}]}')
    image(root / "train" / "images" / "inf.png")
    write_people(kp / "inf.json", [{"keypoints": [[1e400, 10, 2]] + person()[1:]}])
    with caplog.at_level(logging.WARNING, logger="mp_deploy.data"):
        ds = build_dataset("folder", "train", root=root, augment=False)
    assert ds.bad_records == 4
    lines = [r.getMessage() for r in caplog.records if "bad person annotation" in r.getMessage()]
    assert len(lines) == 1 and "4 bad person annotation(s) left out" in lines[0]
    assert len(ds) == 2 + 4 + 3  # the good people, the good person beside each bad one, outside, nan, inf
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mp_deploy.data"):
        good, markers = load_everything(ds, epochs=1)
    assert (good, markers) == (6, 3)
    assert "lies outside the 64x64 image" in caplog.text and "not valid JSON" in caplog.text

    run = tmp_path / "run"
    code = cli.main(["train", "--task", "pose", "--preset", "synthetic-pose", "--data", "folder", "--data-root",
                     str(root), "--val-split", "train", "--init", "scratch", "--model-size", "tiny", "--batch-size",
                     "2", "--steps", "2", "--workers", "0", "--threads", "1", "--eval-limit", "2", "--precision",
                     "fp32", "--no-progress", "--run-dir", str(run)])
    assert code == 0
    summary = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["kind"] == "summary" and summary["bad_records"] == 4


def test_keypoints_given_in_python_are_checked_too():
    """NaN cannot come through JSON here (refused when parsed), but instances built in Python can carry it."""
    from mp_deploy.data.pose import box_array, keypoint_array

    kps = np.asarray(person(), float)
    kps[3, 0] = np.nan
    with pytest.raises(DataError, match="keypoint 3 is not finite"):
        keypoint_array(kps, 17)
    with pytest.raises(DataError, match="not finite or lies beyond"):
        box_array([0.0, float("nan"), 10.0, 10.0])
    assert keypoint_array(person(), 17).shape == (17, 3)


def hostile_record(rng):
    good = person()
    r = rng.random()
    if r < 0.1:
        return rng.choice([5, "x", [], None])
    kps = [list(k) for k in good]
    if r < 0.6:
        k = rng.randrange(17)
        kps[k][rng.randrange(3)] = rng.choice(["x", 1e400, -1e400, 1e308, -1e308, 9, -1, 0.5, True, None, [1, 2],
                                              10 ** 400, 1e6, -5])
    elif r < 0.7:
        kps = rng.choice([None, "x", [], [[1, 2]], kps[:5], kps + kps])
    record = {"keypoints": kps}
    if rng.random() < 0.6:
        record["box"] = rng.choice([None, "x", [1, 2, 3], [1, 2, -3, 4], [0, 0, 0, 0], [1e308] * 4,
                                    [-1e7, 0, 10, 10], [500, 500, 10, 10], [0, 0, 1e6, 1e6], [5, 5, 1e-300, 1e-300],
                                    [10, 10, 40, 50], [-20, -20, 30, 30], [63, 63, 1, 1], [True, 1, 2, 3],
                                    [10 ** 400, 1, 2, 3]])
    return record


def test_pose_record_fuzz_gives_samples_or_counted_skips(tmp_path):
    """Seeded fuzz of person records (keypoints, visibility, boxes, whole files) in a pose folder, held out and
    augmented for training over 3 epochs: every record is a sample, a counted skip or a bad sample, never a
    traceback; the records left out are counted."""
    rng = random.Random(1)
    root = folder(tmp_path / "pose", "pose", {"input_size": [64, 48]}, n=1)
    planted = 0
    for i in range(24):
        people = [hostile_record(rng) for _ in range(rng.randint(1, 3))]
        raw = dumps({"people": people}) if rng.random() < 0.9 else rng.choice(
            ['{"people": 5}', "[]", '{"people": [{"keypoints": NaN}]}', "{" * 200, ""])
        image(root / "train" / "images" / f"f{i}.png", i)
        write_people(root / "train" / "keypoints" / f"f{i}.json", None, raw=raw)
        planted += len(people)
    held_out = build_dataset("folder", "train", root=root, augment=False)
    assert 0 < held_out.bad_records < planted
    assert sum(load_everything(held_out, epochs=1)) == len(held_out)
    training = build_dataset("folder", "train", root=root, augment=True, seed=3)
    kind, value = typed_one_line(lambda: load_everything(training, epochs=3))
    assert kind == "ok" and value[1] == 0  # training substitutes: every sample returned has an image


def test_coco_annotations_are_checked_one_by_one(tmp_path):
    """Bad COCO annotations (values, visibility, an image without a usable size) are left out and counted; a file
    that is not COCO, too deep, or a FIFO is refused with one line."""
    images = [{"id": 1, "file_name": "1.png", "height": SIDE, "width": SIDE},
              {"id": 2, "file_name": "2.png", "height": "x", "width": SIDE}]
    image(tmp_path / "val2017" / "1.png")
    image(tmp_path / "val2017" / "2.png")
    kps = np.asarray(person(), float).ravel().tolist()

    def ann(i, image_id=1, **kw):
        return {"id": i, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": [10, 5, 40, 55],
                "area": 2200, "num_keypoints": 17, "keypoints": kps} | kw
    anns = [ann(1), ann(2, keypoints=kps[:-1] + [9]), ann(3, bbox="x"), ann(4, area="x"),
            ann(5, keypoints=kps[:3] + [1e300] + kps[4:]), ann(6, image_id=2), ann(7, bbox=[1e300, 1, 2, 3])]
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "person_keypoints_val2017.json"
    path.write_text(dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    ds = coco_keypoints(tmp_path, "val2017")
    assert len(ds) == 1 and ds.bad_records == 6 and "image" in ds[0]
    for text in ('{"images": 5, "annotations": []}', "[" * 100 + "]" * 100, '{"images": [{}], "annotations": [{}]}',
                 dumps({"images": images, "annotations": [ann(8, bbox=[1e400, 1, 2, 3])]})):  # 1e400: not JSON
        path.write_text(text)
        with pytest.raises(DataError, match=str(path)):
            coco_keypoints(tmp_path, "val2017")
    path.unlink()
    os.mkfifo(path)
    with no_hang(), pytest.raises(DataError, match="a FIFO"):
        coco_keypoints(tmp_path, "val2017")


# ------------------------------------------------------------------ special files never block

def test_a_fifo_among_training_images_is_skipped_and_named(tmp_path, caplog):
    root = folder(tmp_path / "d", "depth", n=2)
    os.mkfifo(root / "train" / "images" / "fifo.png")
    run = tmp_path / "run"
    with no_hang(), caplog.at_level(logging.WARNING, logger="mp_deploy.data"):
        code = cli.main(["train", "--task", "depth", "--preset", "synthetic-depth", "--data", "folder",
                         "--data-root", str(root), "--val-split", "train", "--init", "scratch", "--model-size",
                         "tiny", "--crop-h", "64", "--crop-w", "64", "--batch-size", "1", "--steps", "1", "--workers",
                         "0", "--threads", "1", "--eval-limit", "1", "--precision", "fp32", "--no-progress",
                         "--run-dir", str(run)])
    assert code == 0
    assert f"skipping {root / 'train' / 'images' / 'fifo.png'}: not a regular file (a FIFO)" in caplog.text


@pytest.mark.parametrize("where", ["dataset.json", "train/keypoints/0.json", "train/images/0.png"])
def test_a_fifo_where_a_pose_file_belongs_never_blocks(tmp_path, where):
    root = folder(tmp_path / "p", "pose", {"input_size": [64, 48]}, n=2)
    (root / where).unlink()
    os.mkfifo(root / where)
    with no_hang():
        kind, value = typed_one_line(lambda: load_everything(build_dataset("folder", "train", root=root,
                                                                           augment=False), epochs=1))
    if where == "dataset.json":
        assert kind == "error" and "a FIFO" in value
    elif "keypoints" in where:  # its image is a bad sample, named when loaded
        assert (kind, value) == ("ok", (1, 1))
    else:  # the image is left out when listed
        assert (kind, value) == ("ok", (1, 0))


def test_a_fifo_as_a_file_list_or_target_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "list.txt")
    with no_hang(), pytest.raises(DataError, match="a FIFO"):
        read_list(tmp_path / "list.txt")
    root = folder(tmp_path / "d", "depth", n=2)
    (root / "train" / "depth" / "0.png").unlink()
    os.mkfifo(root / "train" / "depth" / "0.png")
    with no_hang():
        assert load_everything(build_dataset("folder", "train", root=root, augment=False), epochs=1) == (1, 1)


# ------------------------------------------------------------------ errors from DataLoader workers: one line

class AllBad(SampleDataset):
    substitute_bad = True

    def __len__(self):
        return 3

    def load(self, index, rng):
        raise DataError(f"file{index}.png: broken: really")


@pytest.fixture
def no_workers_left():
    """Asserted by the test: no DataLoader worker outlives the error. Any that does is killed after the test, so
    that a regression fails here instead of hanging the interpreter's exit (workers ignore SIGTERM)."""
    yield lambda: multiprocessing.active_children() == []
    for child in multiprocessing.active_children():
        child.kill()


def test_a_workers_typed_error_is_its_one_line(no_workers_left):
    loader = torch.utils.data.DataLoader(AllBad(), batch_size=None, num_workers=1, worker_init_fn=ignore_sigterm)
    with pytest.raises(DataError) as caught:
        list(one_line_errors(loader))
    message = str(caught.value)
    assert message.startswith("AllBad: 50 bad samples in a row") and "\n" not in message, message
    assert no_workers_left()  # shut down when the error left, not at a garbage collection
    with pytest.raises(DataError) as again:
        list(Stream(torch.utils.data.DataLoader(AllBad(), batch_size=None, num_workers=1), None, "x", False))
    assert str(again.value) == message
    assert str(one_line(DataError("plain"))) == "plain"


def test_a_training_run_whose_worker_fails_ends_with_one_line(tmp_path, capsys, no_workers_left):
    root = folder(tmp_path / "d", "depth", n=2)
    for i in range(2):  # no valid depth anywhere: 50 bad samples in a row, raised in the worker
        write_png(root / "train" / "depth" / f"{i}.png", np.zeros((SIDE, SIDE), np.uint16))
    code = cli.main(["train", "--task", "depth", "--preset", "synthetic-depth", "--data", "folder", "--data-root",
                     str(root), "--val-split", "train", "--init", "scratch", "--model-size", "tiny", "--crop-h", "64",
                     "--crop-w", "64", "--batch-size", "1", "--steps", "1", "--workers", "1", "--threads", "1",
                     "--precision", "fp32", "--no-progress", "--run-dir", str(tmp_path / "run")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "50 bad samples in a row" in lines[0] and "Traceback" not in lines[0], lines
    assert no_workers_left()


# ------------------------------------------------------------------ eval --output, checked before evaluating

@pytest.mark.parametrize("case,message", [("file above", "is a regular file, not a folder"),
                                          ("fifo there", "a FIFO is there")])
def test_eval_output_is_checked_before_evaluating(tmp_path, capsys, case, message):
    if case == "file above":  # --output out/sub: out is a file
        (tmp_path / "out").write_text("")
        output = tmp_path / "out" / "sub"
    else:  # --output out: out/metrics.json is a FIFO
        (tmp_path / "out").mkdir()
        os.mkfifo(tmp_path / "out" / "metrics.json")
        output = tmp_path / "out"
    code = cli.main(["eval", "--baseline", "--preset", "synthetic-seg", "--data", "synthetic", "--limit", "1",
                     "--workers", "0", "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "--output" in lines[0] and message in lines[0], lines
    assert "seg eval" not in captured.out + captured.err  # nothing was evaluated
