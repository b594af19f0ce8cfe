"""Every preset, recipe, protocol and augmentation default of the reference's tasks pinned against
../shared/reference-architecture.md (section numbers in the rows), one table: a value edited by mistake (a crop,
a learning rate, a stride, a shift count, the auxiliary loss weight) turns one row red. Our own designs (pose,
the synthetic demos) are pinned where the README or docs state them."""
import pytest
import torch
import torch.nn.functional as F

from mp_deploy.data.depth import DepthAugment
from mp_deploy.data.pose import PoseAugment, TopDown
from mp_deploy.data.seg import ADE20K_AUGMENT, CITYSCAPES_AUGMENT
from mp_deploy.tasks import PRESETS
from mp_deploy.tasks.depth import DEPTH_PROTOCOLS
from mp_deploy.tasks.pose import POSE_PROTOCOLS
from mp_deploy.tasks.seg import AUX_WEIGHT, SEG_PROTOCOLS, seg_loss
from mp_deploy.train.recipes import RECIPES

# (what, actual, expected): expected values as the reference document states them
ROWS = [
    # presets (sections 3, 4, 5, 13.9)
    ("nyu preset", PRESETS["nyu"], dict(task="depth", refine_steps=3, num_prompts=50, max_depth=10.0,
                                        resize_scale=1, png16_scale=1000.0, window=(480, 480))),
    ("kitti preset", PRESETS["kitti"], dict(task="depth", refine_steps=3, num_prompts=50, max_depth=80.0,
                                            resize_scale=2, png16_scale=256.0, window=(352, 352))),
    ("ade20k preset", PRESETS["ade20k"], dict(task="seg", refine_steps=3, num_prompts=150, num_classes=150,
                                              dropout=0.0, window=(512, 512))),
    ("cityscapes preset", PRESETS["cityscapes"], dict(task="seg", refine_steps=3, num_prompts=150, num_classes=19,
                                                      dropout=0.1, window=(1024, 1024))),
    ("cityscapes-mapillary preset", PRESETS["cityscapes-mapillary"],
     dict(task="seg", refine_steps=1, num_prompts=150, num_classes=19, dropout=0.1, window=(1024, 1024))),
    # depth recipes (section 4, depth training)
    ("nyu recipe", RECIPES["nyu"], dict(data="nyu", batch_size=3, accumulate=1, epochs=25, steps=0, lr=5e-4,
                                        min_lr=3e-5, weight_decay=0.1, unet_lr_mult=0.01, beta1=0.9, beta2=0.999,
                                        schedule="rise-fall", power=0.9, train_vae=False, grad_checkpoint=True,
                                        clip_grad=0.0, best_metric="rmse", crop=(480, 480), init="sd-weights")),
    ("kitti recipe", RECIPES["kitti"], dict(data="kitti", batch_size=3, epochs=25, lr=5e-4, min_lr=3e-5,
                                            weight_decay=0.1, unet_lr_mult=0.01, schedule="rise-fall", power=0.9,
                                            train_vae=False, clip_grad=0.0, best_metric="rmse", crop=(352, 352))),
    # segmentation recipes (section 5, training; configs/ade.py, cityscapes.py, cityscapes_extra*.py)
    *((f"{name} recipe", RECIPES[name], dict(data=data, batch_size=1, accumulate=1, steps=80_000, lr=8e-5,
                                             min_lr=0.0, weight_decay=1e-3, unet_lr_mult=0.1, schedule="poly",
                                             power=1.0, warmup_steps=1500, warmup_ratio=1e-6, beta1=0.9,
                                             beta2=0.999, train_vae=False, clip_grad=0.0, best_metric="mIoU",
                                             eval_every=8000, crop=crop))
      for name, data, crop in (("ade20k", "ade20k", (512, 512)), ("cityscapes", "cityscapes", (1024, 1024)),
                               ("cityscapes-mapillary", "cityscapes", (1024, 1024)))),
    # pose: our design (README, docs/training.md)
    ("coco preset", PRESETS["coco"], dict(task="pose", num_keypoints=17, num_prompts=64, window=(256, 192))),
    ("coco recipe", RECIPES["coco"], dict(data="coco", batch_size=8, steps=60_000, lr=2e-4, weight_decay=0.01,
                                          unet_lr_mult=0.1, schedule="poly", warmup_steps=500, best_metric="AP")),
    # inference protocols (section 8)
    ("nyu protocol", DEPTH_PROTOCOLS["nyu"], dict(shifts=2, flip=True, window=None, cover_all=False)),
    ("kitti protocol", DEPTH_PROTOCOLS["kitti"], dict(shifts=16, flip=True, window=None, cover_all=False)),
    ("ade20k protocol", SEG_PROTOCOLS["ade20k"], dict(scale=(2048, 512), mode="slide", crop=(512, 512),
                                                      stride=(341, 341), ratios=(1.0,), flip=False)),
    *((f"{name} protocol", SEG_PROTOCOLS[name], dict(scale=(2048, 1024), mode="slide", crop=(1024, 1024),
                                                     stride=(512, 512), ratios=(1.0,), flip=False))
      for name in ("cityscapes", "cityscapes-mapillary")),
    ("coco protocol", POSE_PROTOCOLS["coco"], dict(input_size=(256, 192), padding=1.25, flip=True,
                                                   shift_heatmap=True)),
    # training augmentations (section 4: albumentations defaults + the strip; section 5: mmseg's pipeline)
    ("depth augmentation", DepthAugment((480, 480)),
     dict(flip_prob=0.5, brightness_limit=0.2, contrast_limit=0.2, brightness_contrast_prob=0.5,
          gamma_limit=(80, 120), gamma_prob=0.5, hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=20,
          hsv_prob=0.5, strip_every=4, strip_width=0.75)),
    ("ade20k augmentation", ADE20K_AUGMENT, dict(scale=(2048, 512), crop=(512, 512), ratio_range=(0.5, 2.0),
                                                 cat_max_ratio=0.75, flip_prob=0.5, brightness_delta=32,
                                                 contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                                                 hue_delta=18)),
    ("cityscapes augmentation", CITYSCAPES_AUGMENT, dict(scale=(2048, 1024), crop=(1024, 1024),
                                                         ratio_range=(0.5, 2.0), cat_max_ratio=0.75)),
    # pose (mmpose 0.x top-down defaults: our design follows them)
    ("pose crop", TopDown(), dict(input_size=(256, 192), sigma=2.0, padding=1.25, stride=4)),
    ("pose augmentation", PoseAugment(), dict(shift_factor=0.16, shift_prob=0.3, flip_prob=0.5, half_body_prob=0.3,
                                              half_body_min_joints=8, scale_factor=0.5, rot_factor=40.0,
                                              rot_prob=0.6)),
]


@pytest.mark.parametrize("what, actual, expected", ROWS, ids=[r[0] for r in ROWS])
def test_reference_values(what, actual, expected):
    got = {k: getattr(actual, k) for k in expected}
    assert got == expected, what


def test_every_preset_and_recipe_is_in_the_table():
    """A new preset or recipe of the reference's tasks gets its row (synthetic demo presets are ours)."""
    named = {what.split()[0] for what, _, _ in ROWS}
    assert {p for p in PRESETS if not p.startswith("synthetic")} <= named
    assert {r for r in RECIPES if not r.startswith("synthetic")} <= named


def test_the_auxiliary_head_weighs_0_4():
    """seg_loss = CE + Lovasz + 0.4 CE(aux), with CE computed here by torch itself (section 5: FCNHead loss 0.4)."""
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 5, 8, 8), torch.randn(2, 5, 4, 4)
    labels = torch.randint(0, 5, (2, 16, 16))
    parts = seg_loss(logits, aux, labels)
    up = F.interpolate(aux, size=(16, 16), mode="bilinear", align_corners=False)
    assert AUX_WEIGHT == 0.4
    assert parts["aux_ce"].item() == pytest.approx(0.4 * F.cross_entropy(up, labels).item(), rel=1e-6)
    main = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    assert parts["ce"].item() == pytest.approx(F.cross_entropy(main, labels).item(), rel=1e-6)
    without = seg_loss(logits, None, labels)
    assert set(without) == {"ce", "lovasz", "loss"}
    assert parts["loss"].item() == pytest.approx(without["loss"].item() + parts["aux_ce"].item(), rel=1e-6)
