"""Real-world models, pruned straight after they are built (no forward before): they still run,
keep their answer's shape and lose a real share of their parameters. One small model per
family; each family is skipped when its package is not installed (the ``realworld`` extra).
Nothing is downloaded: random init, YOLO from its yaml with ``YOLO_OFFLINE``."""

import os

import pytest
import torch

import prune_explorer as tp

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _removed(before, model):
    return 1 - tp.utils.count_params(model) / before


def _shapes(out):
    return [tuple(t.shape) for t in tp.tracing.iter_tensors(out)]


def _reference(model, *args, **kwargs):
    """Output shapes from a copy, so that the model itself never ran."""
    import copy
    with torch.no_grad():
        return _shapes(copy.deepcopy(model)(*args, **kwargs))


def test_a_yolo_pruned_straight_after_it_is_built_runs():
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 160, 160)
    model = tasks.DetectionModel("yolov8n.yaml", verbose=False).eval()
    want = _reference(model, x)[:1]
    before = tp.utils.count_params(model)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.model[-1]])
    with torch.no_grad():  # the repro: RuntimeError (anchors of size 0) before
        assert _shapes(model(x))[:1] == want
    # the raw pyramid features are returned for the loss: by default they pin 3 groups
    assert sum("output[1]['feats']" in why for _root, why in report.skipped) == 3
    assert _removed(before, model) > 0.45


@pytest.mark.slow
def test_yolo_prunes_as_far_as_torch_pruning_once_its_loss_outputs_are_released():
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 160, 160)
    model = tasks.SegmentationModel("yolov8n-seg.yaml", verbose=False).eval()
    want = _reference(model, x)
    before = tp.utils.count_params(model)
    keep = lambda out: out[0]  # noqa: E731  predictions and mask prototypes
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.model[-1]],
                            fixed_outputs=keep)
    assert not report.skipped  # every group prunes (the ignored head is no layer of its own)
    with torch.no_grad():
        got = _shapes(model(x))
    assert got[:2] == want[:2]  # (1, 116, anchors) and the (1, 32, 40, 40) prototypes
    assert _removed(before, model) > 0.58  # Torch-Pruning fails on C2f's chunk here


def test_a_diffusers_unet_pruned_straight_after_it_is_built_runs():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
        attention_head_dim=8).eval()
    x = {"sample": torch.randn(1, 3, 16, 16), "timestep": torch.tensor([3])}
    want = _reference(model, **x)
    before = tp.utils.count_params(model)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.conv_out])
    with torch.no_grad():
        assert _shapes(model(**x)) == want
    # Upsample2D / Downsample2D assert their input width against self.channels: it follows
    assert not any("breaks" in why for _root, why in report.skipped)
    assert model.up_blocks[0].upsamplers[0].channels == 16
    # conv_in's GroupNorms (4 channels a group) and the concatenations of the up path (skip
    # connections at offsets that are no multiple of those groups) leave no whole groups
    why = dict(report.skipped)["conv_in"]
    assert "single unit" in why and "norm1" in why
    assert _removed(before, model) > 0.6


def test_an_smp_unet_pruned_straight_after_it_is_built_runs():
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, decoder_channels=(64, 32, 16, 16, 8),
                     classes=2).eval()
    x = torch.randn(1, 3, 64, 64)
    before = tp.utils.count_params(model)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.segmentation_head])
    with torch.no_grad():
        assert model(x).shape == (1, 2, 64, 64)
    assert not report.skipped
    assert _removed(before, model) > 0.7


def test_raft_pruned_straight_after_it_is_built_runs():
    optical_flow = pytest.importorskip("torchvision.models.optical_flow")
    torch.manual_seed(0)
    model = optical_flow.raft_small(weights=None).eval()
    a, b = torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)
    before = tp.utils.count_params(model)
    report = tp.prune_model(model, (a, b), amount=0.5,
                            ignored_layers=[model.update_block.flow_head.conv2],
                            fixed_outputs=lambda flows: flows[-1])
    with torch.no_grad():
        assert model(a, b, num_flow_updates=2)[-1].shape == (1, 2, 128, 128)
    assert not any("breaks" in why for _root, why in report.skipped)
    assert _removed(before, model) > 0.4


@pytest.mark.slow
def test_a_faster_rcnn_pruned_straight_after_it_is_built_runs():
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                             weights_backbone=None).eval()
    x = ([torch.rand(3, 160, 160)],)
    heads = [model.roi_heads.box_predictor, model.rpn.head.cls_logits,
             model.rpn.head.bbox_pred]
    before = tp.utils.count_params(model)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=heads)
    with torch.no_grad():
        out = model(*x)
    assert out[0]["boxes"].shape[-1] == 4
    # the FPN levels are pooled with roi_align and written into one tensor per box
    assert not any("roi_align" in why or "index_put" in why for _r, why in report.skipped)
    assert _removed(before, model) > 0.6
