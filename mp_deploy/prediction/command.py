"""`mp-deploy predict`: images, folders and videos to depth maps, masks and keypoints, on any backend.

    mp-deploy predict --task depth --input photos/ --output out/                 # the bundled demo model
    mp-deploy predict --input clip.mp4 --output out/ --engine artifacts/depth-nyu-sd15-fp16.engine
    mp-deploy predict --task seg --input photos/ --output out/ --checkpoint ade20k.pth --preset ade20k
    mp-deploy predict ... --shard 3/8 --resume                                    # one of 8 processes

Exit status: 0 every input done; 2 bad arguments or nothing to do (no inputs, an output folder that cannot be
written); 1 the run itself failed (a model that cannot load, an engine failure outside any one input);
10 + N when N inputs failed (11 = one, ...; 110 = 100 or more), each named on stderr with its cause.
"""
from __future__ import annotations

import argparse
import os
import sys

from mp_deploy import cli, tasks
from mp_deploy.prediction.predictor import TTA
from mp_deploy.prediction.runner import PRECISIONS, backend_choices

FAILED_BASE, FAILED_CAP = 10, 100  # exit status 10 + min(failed inputs, 100)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--input", required=True, help="an image, a video, or a folder of them (recursive, sorted)")
    cli.add_output(ap, "the folder for the outputs (created; keyed by input path)", required=True)
    cli.add_task(ap, required=False)
    cli.add_preset(ap)
    model = ap.add_argument_group("model (one of; none: the bundled demo model of --task)")
    model.add_argument("--engine", help="an exported artifact (.onnx, .pt2, .engine), or a folder of them")
    model.add_argument("--checkpoint", help="our .safetensors or an official checkpoint, run eagerly")
    model.add_argument("--server", help="a Triton server URL (mp-deploy serve)")
    model.add_argument("--server-model", help="the model's name on the server (default <task>-<preset>)")
    cli.add_backend(ap, "eager for checkpoints; with --engine DIR, the artifact to pick (auto: TensorRT, "
                        "torch-tensorrt, AOTInductor, ONNX, the first that runs here)")
    cli.add_device(ap)
    cli.add_precision(ap, "auto", "eager: fp16 on CUDA, fp32 on CPU by default; an artifact runs as it was built")
    ap.add_argument("--tta", default="auto", choices=list(TTA),
                    help="test-time augmentation: auto = the reference's protocol (depth and pose flip; "
                         "segmentation single-scale), on = flip (+ multi-scale for segmentation), off")
    cli.add_batch_size(ap, "an image's windows / crops go through the engine in chunks of this size "
                          "(default: 8, or the artifact's max batch if smaller)")
    cli.add_sizes(ap, "window height, one value (default: the artifact's, else the preset's)")
    names = sorted({n for t in tasks.all_tasks() for n in t.outputs})
    ap.add_argument("--outputs", type=cli.name_list,
                    help=f"which outputs to write, comma-separated (default all of the task's): {', '.join(names)}")
    ap.add_argument("--boxes", help="pose: person boxes, JSON {input: [[x, y, w, h(, score)], ...]} "
                                    "(default: the whole image)")
    ap.add_argument("--shard", default="0/1", help="I/N: this process takes every N-th input from the I-th "
                                                   "(0-based); auto: from torchrun or a Slurm job array")
    ap.add_argument("--resume", action="store_true", help="skip inputs whose outputs are all there")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (error lines and summary only)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mp_deploy.prediction import Predictor, Source
    from mp_deploy.prediction.inputs import check_apart, parse_shard
    from mp_deploy.prediction.job import output_folder, plan, write_manifest
    from mp_deploy.prediction.pipeline import Pipeline
    from mp_deploy.prediction.video import count_frames

    cli.check_choice(args.precision, PRECISIONS, "--precision")
    cli.check_choice(args.backend, backend_choices(), "--backend")
    shard = parse_shard(args.shard)
    check_apart(args.input, args.output)
    folder = output_folder(args.output)  # before loading anything: a bad folder fails at once
    _local_gpu()
    source = Source(task=args.task, engine=args.engine, checkpoint=args.checkpoint, server=args.server,
                    server_model=args.server_model, preset=args.preset, backend=args.backend, device=args.device,
                    precision=args.precision, batch_size=args.batch_size, height=cli.one_size(args.height, "--height"),
                    width=cli.one_size(args.width, "--width"))
    predictor = Predictor(source, tta=args.tta, boxes=args.boxes)
    pipeline = Pipeline(predictor, folder, args.outputs, keep_arrays=False)
    job = plan(args.input, pipeline, shard, args.resume)
    write_manifest(folder, predictor.describe() | {"outputs": list(args.outputs or [])}, args.resume, job.complete)
    if job.special:
        shown = ", ".join(f"{path} ({what})" for path, what in job.special[:5])
        more = f" and {len(job.special) - 5} more" if len(job.special) > 5 else ""
        print(f"skipped {len(job.special)} inputs that are not regular files: {shown}{more}", file=sys.stderr)
    if job.unmatched:
        more = f" and {len(job.unmatched) - 5} more" if len(job.unmatched) > 5 else ""
        print(f"--boxes: {len(job.unmatched)} entries name no input and are not used: "
              f"{', '.join(job.unmatched[:5])}{more}", file=sys.stderr)
    n = predictor.network
    print(f"predict {predictor.task} ({predictor.preset.name}) with {n.name} on {n.device}: window "
          f"{n.window[0]}x{n.window[1]}, up to {n.max_batch} windows per call, tta {args.tta}; "
          f"{len(job.items)} inputs to do (shard {shard[0]}/{shard[1]}: {job.in_shard} of {job.listed}"
          + (f", {job.complete} complete and skipped" if args.resume else "")
          + (f"; {job.others} other files ignored" if job.others else "") + ")", flush=True)
    total = sum(count_frames(item.path) if item.video else 1 for item in job.items)
    predictor.clock.start_now()
    with tqdm(total=total, unit="img", desc="predict", disable=args.no_progress, dynamic_ncols=True) as bar:
        for p in pipeline(job.items):
            if p.error:
                tqdm.write(p.error, file=sys.stderr)
                bar.set_postfix(failed=len(pipeline.failed), refresh=False)
            else:
                bar.update(1)
    print(predictor.clock.line(pipeline.images, len(pipeline.failed)), flush=True)
    return exit_status(len(pipeline.failed))


def exit_status(failed: int) -> int:
    return FAILED_BASE + min(failed, FAILED_CAP) if failed else 0


def _local_gpu() -> None:
    """Under torchrun, each process on its own GPU (LOCAL_RANK)."""
    if "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
