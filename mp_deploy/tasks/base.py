"""The interface every task implements: what the model, the artifacts, the runtime, predict, training, evaluation,
serving and the benchmarks need to know about one task. Each task is one module (mp_deploy/tasks/<task>.py) with
one subclass of Task; the registry (mp_deploy.tasks) holds one instance of each, and every other layer asks it
instead of testing a task's name. How to add a task: docs/architecture.md.

A task module is light to import (no model, data or drawing code at module level): the runtime asks it how to
read an artifact's output without importing the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mp_deploy.errors import UsageError


@dataclass(frozen=True)
class OutputFile:
    """One file predict writes per input: `suffix` after the input's stem, `format` how it is written (png: an
    8-bit RGB / gray or 16-bit image; palette-png: class indices with the palette; npy; json; mp4: a video of
    RGB frames)."""

    suffix: str
    format: str


@dataclass(frozen=True)
class OfficialLayout:
    """How the reference's checkpoints of this task are laid out (mp_deploy.checkpoints reads and writes them):
    the prefix of the backbone keys, renames of the head keys to ours (official prefix -> our prefix), the key
    whose first dimension is the prompt count, the head tensors that fix preset fields (key -> (preset field,
    dimension)), and the file's wrapper key ('model' for depth, 'state_dict' with an mmcv 'meta' for seg)."""

    prefix: str
    head_renames: dict = field(default_factory=dict)
    prompts_key: str = "meta_prompts"
    preset_from_shapes: dict = field(default_factory=dict)
    wrapper: str = "model"
    default_preset: str = ""


@dataclass(frozen=True)
class GoldenSpec:
    """What the reference's golden files store for this task (mp_deploy.golden): `model_word` appears in the
    file's `model` metadata; `preset` is the preset its weights load with; `input` is the state key the stored
    input feeds (images in [0, 1], or the encoder's [-1, 1] input); `tags` are the tensors stored per input
    after the UNet features; `output_tag` is the task output's tag (compared centred), if stored;
    `preset_fields` are read from the file's metadata (name -> type); `heads_stored` says whether the file's
    checkpoint holds the heads."""

    model_word: str
    preset: str
    input: str
    tags: tuple[str, ...]
    output_tag: str | None = None
    preset_fields: dict = field(default_factory=dict)
    heads_stored: bool = True


@dataclass(frozen=True)
class Work:
    """The work of one image through a protocol: `windows` network inputs (windows, crops, their flips) and
    the largest image (`pixels`) it is resized to on the way."""

    windows: int
    pixels: int


class Task:
    """One task. Subclasses fill the class attributes and implement the methods; see mp_deploy/tasks/depth.py."""

    # ------------------------------------------------------------ identity and presets
    name: str = ""
    help: str = ""  # a few words for --task's help
    presets: tuple = ()  # mp_deploy.configs.Preset instances: the task's presets, as data
    default_preset: str = ""
    official: OfficialLayout | None = None  # None: the reference released no checkpoint of this task
    golden: GoldenSpec | None = None  # None: no golden files

    def check_preset(self, preset) -> None:
        """The task's own preset fields (UsageError naming the first bad one)."""

    def model_class(self) -> type:
        """The nn.Module class of the task model (mp_deploy.models.MetaPromptsModel subclass)."""
        raise NotImplementedError

    # ------------------------------------------------------------ the output contract (sidecar, engine, serve)
    output_name: str = ""  # the network output's name in every artifact
    output_kind: str = ""  # the sidecar's output.kind
    output_stride: int = 1  # the output's stride relative to the input
    output_fields: tuple[str, ...] = ()  # what the sidecar's output must hold beyond the common fields
    run_output_names: tuple[str, ...] = ()  # what Engine.run returns, in order

    def describe_output(self, preset: dict) -> dict:
        """The sidecar's output description for a model of `preset` (the dtype is added by the caller)."""
        raise NotImplementedError

    def output_channels(self, output: dict) -> int:
        """Channels of the raw network output, from a verified sidecar's output description."""
        raise NotImplementedError

    def run_outputs(self, raw, input_hw) -> dict:
        """Engine.run's arrays from the raw network output (B, C, h, w) float32 of inputs of size input_hw."""
        raise NotImplementedError

    def served_outputs(self, channels: int, height: int, width: int) -> list[tuple[str, Any, tuple]]:
        """Engine.run's arrays per image as (name, numpy dtype, dims): what a server returns. height and width
        are the raw output's (-1 where they vary)."""
        raise NotImplementedError

    # ------------------------------------------------------------ inference protocols (predict, evaluation)
    protocols: dict = {}  # data set -> its protocol (a frozen dataclass of this task)
    preset_protocols: dict = {}  # preset -> data set, where the preset is not named after it

    def protocol_for(self, preset_name: str):
        """The protocol of the preset's data set (the task's default preset's when it has none)."""
        key = self.preset_protocols.get(preset_name, preset_name)
        return self.protocols.get(key) or self.protocols[self.preset_protocols.get(self.default_preset,
                                                                                    self.default_preset)]

    def tta(self, level: str) -> dict:
        """Protocol overrides for --tta `level` (on / off; auto = none: the protocol's own)."""
        return {}

    def fit_protocol(self, protocol, window: tuple[int, int], fixed: bool, tta: str):
        """`protocol` run with a network of input `window` (fixed: an artifact of exactly that size)."""
        raise NotImplementedError

    def predict(self, image, run: Callable, protocol, preset, boxes=None, max_batch: int = 8,
                min_batch: int = 1) -> dict:
        """One image (3, H, W) float in [0, 1] through the protocol -> its arrays (numpy)."""
        raise NotImplementedError

    def work(self, protocol, height: int, width: int, boxes=None) -> "Work":
        """What `predict` would do for an image of this size, computed from the sizes alone (nothing is
        resized or run): the network inputs (windows, crops) it would run and the largest image it would resize
        to. Checked against WORK_LIMITS before any work starts (mp_deploy.tasks.check_work)."""
        raise NotImplementedError

    def draw_threshold(self, protocol) -> float:
        """The score above which a drawn output shows a detection (pose keypoints); 0 where nothing is scored."""
        return 0.0

    # ------------------------------------------------------------ predict's files
    outputs: dict = {}  # name -> OutputFile, for images
    video_outputs: dict = {}  # name -> OutputFile, for videos

    def render(self, name: str, image, result: dict, preset, threshold: float, video: bool = False):
        """Output `name` of one image or frame (an array, or JSON-able data) from its arrays."""
        raise NotImplementedError

    def output_records(self, name: str, value, image_id: int, key: str, frame: int | None = None):
        """A JSON output's records for one image or frame (pose: COCO results); others: value as it is."""
        return value

    picture: str = ""  # the `outputs` name whose render shows a result as one RGB picture
    # what the bundled demo should reach on held-out scenes (benchmarks/demo_models.py checks it): (metric, bound,
    # rule) with rule "ratio" (at most bound x the trivial baseline's value; lower is better) or "min" (at least)
    demo_targets: tuple = ()

    def truth(self, sample: dict) -> dict:
        """A held-out sample's ground truth in the form `predict` returns, so that `render` draws it."""
        raise NotImplementedError

    # ------------------------------------------------------------ training and evaluation
    target: str = ""  # the sample's training target
    target_weight: str | None = None  # its per-sample weight, if any
    metrics: dict = {}  # metric -> larger is better (the metrics that may pick best.safetensors)
    headline: tuple[str, ...] = ()  # the metrics logs and summaries show

    def loss(self, state: dict, target, weight=None) -> dict:
        """The training loss and its parts (fp32) from the model's final stage state."""
        raise NotImplementedError

    def random_target(self, preset, batch: int, height: int, width: int, device=None):
        """(target, weight or None) of the right shapes and ranges for a batch of inputs of that size (throughput
        benchmarks, tests)."""
        raise NotImplementedError

    def meter(self, dataset, preset, **options):
        """An empty evaluation meter for `dataset` (update with evaluate_into; mergeable across ranks)."""
        raise NotImplementedError

    def evaluate_into(self, meter, samples, run: Callable, dataset, protocol=None, device=None, max_batch: int = 8,
                      min_batch: int = 1) -> None:
        """Samples of `dataset` through its protocol (the data set's own unless `protocol` is given) into
        `meter`."""
        raise NotImplementedError

    def baseline(self, train_samples: list[dict], preset) -> Callable:
        """The trivial baseline fitted on training samples, as a run(batch) callable."""
        raise NotImplementedError

    # ------------------------------------------------------------ data
    data_sources: tuple[str, ...] = ()  # released layouts of this task (mp_deploy.data.build_dataset)
    sample_fields: tuple[str, ...] = ()  # what its samples hold beyond image and file (docs/data.md)

    def released_dataset(self, source: str, root, split: str, **options):
        raise UsageError(f"{self.name} has no released data set {source!r}")

    def folder_dataset(self, root, split: str, **options):
        raise NotImplementedError

    def synthetic_dataset(self, **options):
        raise NotImplementedError

    def data_options(self, source: str, crop: tuple[int, int], train: bool) -> dict:
        """Options of build_dataset for a recipe's data source and crop (the preset window by default)."""
        return {}

    def __repr__(self) -> str:
        return f"<task {self.name}>"
