"""Model builders for the real-world zoos: Ultralytics YOLO, diffusers, segmentation-models-
pytorch and torchvision's detection / segmentation / video / optical-flow models.

Every builder returns a ``Case``: a *fresh*, randomly initialised model in eval mode, its
example inputs, the layers both tools ignore (the task heads whose outputs are the model's
answer), and ``keep``: which of the model's outputs must keep their shape (``None``: the
default of each tool). Nothing is downloaded: YOLO from its yaml with ``YOLO_OFFLINE=1``,
diffusers from small configs, smp with ``encoder_weights=None``, torchvision with
``weights=None, weights_backbone=None``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")


@dataclass
class Case:
    model: nn.Module
    inputs: Any
    ignored: list = field(default_factory=list)
    keep: Callable | None = None  # output -> the tensors whose shape must be kept
    signature: Callable | None = None  # output -> comparable shapes (default: every tensor)


def _shapes(out) -> list:
    from prune_explorer.tracing import iter_tensors
    return [tuple(t.shape) for t in iter_tensors(out)]


# ----------------------------------------------------------------------------- ultralytics

YOLO_SIZE = 320
_YOLO = {  # name -> yaml
    "yolov3-tiny": "yolov3-tiny.yaml",
    "yolov5nu": "yolov5n.yaml", "yolov5nu-p6": "yolov5n-p6.yaml",
    "yolov6n": "yolov6n.yaml",
    "yolov8n": "yolov8n.yaml", "yolov8n-seg": "yolov8n-seg.yaml",
    "yolov8n-pose": "yolov8n-pose.yaml", "yolov8n-obb": "yolov8n-obb.yaml",
    "yolov8n-ghost": "yolov8n-ghost.yaml", "yolov8n-p2": "yolov8n-p2.yaml",
    "yolov9t": "yolov9t.yaml", "yolov10n": "yolov10n.yaml",
    "yolo11n": "yolo11n.yaml", "yolo11n-seg": "yolo11n-seg.yaml",
    "yolo11n-pose": "yolo11n-pose.yaml", "yolo11n-obb": "yolo11n-obb.yaml",
    "yolo12n": "yolo12n.yaml", "yolo12n-seg": "yolo12n-seg.yaml",
    "yolo26n": "yolo26n.yaml", "yolo26n-seg": "yolo26n-seg.yaml",
    "yolo26n-pose": "yolo26n-pose.yaml", "yolo26n-obb": "yolo26n-obb.yaml",
}


def ultralytics_names() -> list[str]:
    from ultralytics.cfg import get_cfg  # noqa: F401  (fails early if absent)
    from ultralytics.utils import ROOT
    have = {p.name for p in (ROOT / "cfg" / "models").rglob("*.yaml")}

    def base(yaml):  # yolov8n-seg.yaml -> yolov8-seg.yaml (the scale is a letter in the name)
        import re
        return re.sub(r"(yolo(?:v\d+)?\d*)[nsmlxt]([-.])", r"\1\2", yaml)
    return [n for n, y in _YOLO.items() if base(y) in have or y in have]


def yolo_predictions(out):
    """The predictions of a YOLO head in eval mode: ``(y, raw)`` -> ``y``; the raw dict
    (pyramid features, box and class maps) is returned for the loss only."""
    return out[0] if isinstance(out, (tuple, list)) else out


def build_ultralytics(name: str) -> Case:
    from ultralytics.nn import tasks
    yaml = _YOLO[name]
    task = tasks.guess_model_task(yaml)
    cls = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel,
           "pose": tasks.PoseModel, "obb": tasks.OBBModel}[task]
    model = cls(yaml, verbose=False).eval()
    x = torch.randn(1, 3, YOLO_SIZE, YOLO_SIZE)
    return Case(model, x, [model.model[-1]], keep=yolo_predictions,
                signature=lambda out: _shapes(yolo_predictions(out)))


# ----------------------------------------------------------------------------- diffusers

def diffusers_names() -> list[str]:
    return list(_DIFFUSERS)


def _unet2d():
    from diffusers import UNet2DModel
    m = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                    block_out_channels=(32, 64, 64),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=8, attention_head_dim=8)
    return m, {"sample": torch.randn(1, 3, 32, 32), "timestep": torch.tensor([10])}


def _unet2d_condition():
    from diffusers import UNet2DConditionModel
    m = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4,
                             layers_per_block=1, block_out_channels=(32, 64),
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                             cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    return m, {"sample": torch.randn(1, 4, 16, 16), "timestep": torch.tensor([10]),
               "encoder_hidden_states": torch.randn(1, 7, 32)}


def _vae():
    from diffusers import AutoencoderKL
    m = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                      block_out_channels=(32, 64),
                      down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
                      norm_num_groups=8, sample_size=32)
    return m, {"sample": torch.randn(1, 3, 32, 32)}


def _vae_encoder():
    m, x = _vae()
    return m.encoder, x["sample"]


_DIFFUSERS = {"unet2d": _unet2d, "unet2d-condition": _unet2d_condition,
              "autoencoder-kl": _vae}


def build_diffusers(name: str) -> Case:
    model, x = _DIFFUSERS[name]()
    model.eval()
    ignored = [m for n, m in model.named_modules() if n.endswith("conv_out")]
    return Case(model, x, ignored)


# ----------------------------------------------------------------------------- smp

# (PSPNet is left out: it runs 3 of its encoder's 5 stages, so half its parameters are never
# called and neither tool can prune them)
_SMP = {
    "unet-resnet18": ("Unet", "resnet18"), "unet-efficientnet-b0": ("Unet", "efficientnet-b0"),
    "unet-mobilenet_v2": ("Unet", "mobilenet_v2"), "fpn-resnet34": ("FPN", "resnet34"),
    "fpn-efficientnet-b0": ("FPN", "efficientnet-b0"),
    "deeplabv3plus-resnet18": ("DeepLabV3Plus", "resnet18"),
    "linknet-resnet18": ("Linknet", "resnet18"), "deeplabv3-resnet18": ("DeepLabV3", "resnet18"),
    "pan-resnet18": ("PAN", "resnet18"), "manet-resnet18": ("MAnet", "resnet18"),
    "unetplusplus-resnet18": ("UnetPlusPlus", "resnet18"),
    "upernet-resnet18": ("UPerNet", "resnet18"),
    "unet-timm-efficientnet-b0": ("Unet", "timm-efficientnet-b0"),
    "unet-mit_b0": ("Unet", "mit_b0"),
}


def smp_names() -> list[str]:
    return list(_SMP)


def build_smp(name: str) -> Case:
    import segmentation_models_pytorch as smp
    arch, encoder = _SMP[name]
    model = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=3).eval()
    ignored = [model.segmentation_head]
    return Case(model, torch.randn(1, 3, 128, 128), ignored)


# ----------------------------------------------------------------------------- torchvision tasks

_TV_DETECTION = ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                 "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn",
                 "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "fcos_resnet50_fpn",
                 "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"]
_TV_SEGMENTATION = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
                    "lraspp_mobilenet_v3_large"]
_TV_VIDEO = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t"]
_TV_FLOW = ["raft_small", "raft_large"]


def tv_tasks_names() -> list[str]:
    return _TV_DETECTION + _TV_SEGMENTATION + _TV_VIDEO + _TV_FLOW


def _detection_heads(model) -> list:
    """The layers that write a detector's answer: box / class / mask / keypoint predictors
    (SSD: the per-level predictor convs of its classification and regression heads)."""
    heads = []
    for n, m in model.named_modules():
        leaf = n.rpartition(".")[2]
        if leaf in ("cls_logits", "bbox_pred", "cls_score", "mask_fcn_logits",
                    "kps_score_lowres", "bbox_reg", "bbox_ctrness") and isinstance(
                m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            heads.append(m)
        elif n.endswith(("classification_head.module_list", "regression_head.module_list")):
            heads.append(m)
    return heads


def _det_signature(out):
    return [(k, tuple(v.shape[1:])) for d in out for k, v in sorted(d.items())]


def build_tv_tasks(name: str) -> Case:
    import torchvision
    from torchvision import models as M
    kw = {"weights": None}
    if name in _TV_DETECTION:
        kw["weights_backbone"] = None
        model = M.get_model(name, **kw).eval()
        size = 320
        x = ([torch.rand(3, size, size)],)
        return Case(model, x, _detection_heads(model), signature=_det_signature)
    if name in _TV_SEGMENTATION:
        kw["weights_backbone"] = None
        kw["aux_loss"] = False
        model = M.get_model(name, **kw).eval()
        heads = [model.classifier[-1] if isinstance(model.classifier, nn.Sequential) else
                 model.classifier]
        if name.startswith("lraspp"):
            heads = [model.classifier.low_classifier, model.classifier.high_classifier]
        return Case(model, torch.randn(1, 3, 224, 224), heads,
                    keep=lambda out: out["out"], signature=lambda out: [tuple(out["out"].shape)])
    if name in _TV_VIDEO:
        model = M.get_model(name, **kw).eval()
        frames, size = (16, 224) if name in ("mvit_v2_s",) else (8, 112)
        if name == "s3d":
            frames, size = 16, 224
        if name == "swin3d_t":
            frames, size = 8, 112
        last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv3d))][-1]
        return Case(model, torch.randn(1, 3, frames, size, size), [last])
    if name in _TV_FLOW:
        model = M.get_model(name, **kw).eval()
        a, b = torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)
        # the flow (2 channels) and the upsampling weights (9 x 8 x 8) are the answer
        ignored = [model.update_block.flow_head.conv2]
        if model.mask_predictor is not None:
            ignored.append(model.mask_predictor.conv)
        return Case(model, (a, b), ignored,
                    keep=lambda out: out[-1], signature=lambda out: [tuple(out[-1].shape)])
    raise KeyError(name)


ZOOS = {
    "ultralytics": (ultralytics_names, build_ultralytics),
    "diffusers": (diffusers_names, build_diffusers),
    "smp": (smp_names, build_smp),
    "tv-tasks": (tv_tasks_names, build_tv_tasks),
}
