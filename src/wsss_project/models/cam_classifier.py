"""Image-level classifier whose last features give class activation maps (APSAM eq. 1).

A ResNet backbone -> global average pooling -> one linear layer. Because the head is linear after
the pooling, the classic CAM of class c is the same linear map applied at every location:
CAM_c(x, y) = sum_k w_ck f_k(x, y).

Backbones (``localization.backbone``):

* ``small``: a from-scratch ResNet of BasicBlocks sized by ``base_width`` and ``blocks``.
* ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision's architecture (conv1 ... layer4, its
  ``fc`` dropped), so a local torchvision state_dict initialises it key for key.

A ``pretrained_backbone`` file must hold exactly the backbone that was declared: every backbone
tensor present with its shape, nothing else except the file's own classifier. Anything less is an
error, never a silent partial load that trains the rest from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from wsss_project.errors import UserInputError
from wsss_project.models.pixel_relation import PixelRelation, RelationSpec

logger = logging.getLogger(__name__)

BACKBONES = ("small", "resnet18", "resnet34", "resnet50")
_TORCHVISION_RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
# Output stride -> how many of layer2..4 trade their stride 2 for dilation.
_DILATED_STAGES = {32: 0, 16: 1, 8: 2}
_STAGE_STRIDES = (1, 2, 2, 2)  # stem already divides by 4; stages 2-4 halve again
_STEM_STRIDE = 4
_STAGES = ("layer1", "layer2", "layer3", "layer4")
# Classifier layers of a checkpoint (torchvision `fc`, a CAMClassifier's own `head`): never part
# of the backbone, so ignored in the file and never filled from it.
_CLASSIFIER_PREFIXES = ("fc.", "head.")
# BN step counters: older checkpoints omit them and they do not affect inference.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_KEYS_SHOWN = 5  # keys of each kind quoted in a mismatch error (message length only)
_PARAM_BACKBONE = "localization.backbone"
_PARAM_FILE = "localization.pretrained_backbone"


class BasicBlock(nn.Module):
    """torchvision-style residual block: two 3x3 convs, identity or 1x1 projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _small_backbone(
    base_width: int, blocks: Sequence[int], output_stride: int
) -> tuple[dict[str, nn.Module], int]:
    """The from-scratch backbone's modules (torchvision names) and its feature width; convs are
    Kaiming-initialised by the caller."""
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"blocks must be four positive counts, got {tuple(blocks)}")
    modules: dict[str, nn.Module] = {
        "conv1": nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False),
        "bn1": nn.BatchNorm2d(base_width),
        "relu": nn.ReLU(inplace=True),
        "maxpool": nn.MaxPool2d(3, stride=2, padding=1),
    }
    in_ch, stride_so_far, dilation = base_width, _STEM_STRIDE, 1
    for i, (n_blocks, stride) in enumerate(zip(blocks, _STAGE_STRIDES, strict=True)):
        out_ch = base_width * 2**i
        if stride_so_far * stride > output_stride:
            # Replace the stride by dilation (DeepLab-style) to keep a finer CAM grid.
            dilation, stride = dilation * stride, 1
        stride_so_far *= stride
        layers = [BasicBlock(in_ch, out_ch, stride=stride, dilation=dilation)]
        layers += [BasicBlock(out_ch, out_ch, dilation=dilation) for _ in range(n_blocks - 1)]
        modules[_STAGES[i]] = nn.Sequential(*layers)
        in_ch = out_ch
    return modules, in_ch


def _set_conv(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    """Give an existing conv a new stride and dilation, padding kept 'same' for 3x3 kernels."""
    conv.stride = (stride, stride)
    conv.dilation = (dilation, dilation)
    if conv.kernel_size[0] > 1:
        conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 2


def _dilate_basic_stage(stage: nn.Sequential, previous: int) -> int:
    """Turn a stride-2 stage of torchvision BasicBlocks into stride 1 with dilation.

    torchvision's BasicBlock refuses dilation, so this edits the convs in place. The strided 3x3
    keeps the incoming dilation (it now samples the finer grid at the old spacing); every 3x3
    after it is dilated twice as much, so each one sees the same inputs as in the strided net
    (the stride-32 features are the dilated ones sampled every 2 pixels). Returns the new dilation.
    """
    dilation = previous * 2
    first = stage[0]
    _set_conv(first.conv1, stride=1, dilation=previous)
    if first.downsample is not None:
        _set_conv(first.downsample[0], stride=1, dilation=1)
    first.stride = 1
    _set_conv(first.conv2, stride=1, dilation=dilation)
    for block in list(stage)[1:]:
        _set_conv(block.conv1, stride=1, dilation=dilation)
        _set_conv(block.conv2, stride=1, dilation=dilation)
    return dilation


def _torchvision_backbone(name: str, output_stride: int) -> tuple[dict[str, nn.Module], int]:
    """torchvision's ResNet `name` without its fc, last stage(s) dilated to `output_stride`."""
    n_dilated = _DILATED_STAGES[output_stride]
    dilate = [False] * (3 - n_dilated) + [True] * n_dilated  # for layer2, layer3, layer4
    builder = _TORCHVISION_RESNETS[name]
    if name == "resnet50":
        net = builder(weights=None, replace_stride_with_dilation=dilate)
    else:
        net = builder(weights=None)
        dilation = 1
        for stage_name, dilated in zip(_STAGES[1:], dilate, strict=True):
            if dilated:
                dilation = _dilate_basic_stage(getattr(net, stage_name), dilation)
    modules = {k: getattr(net, k) for k in ("conv1", "bn1", "relu", "maxpool", *_STAGES)}
    return modules, net.fc.in_features


class CAMClassifier(nn.Module):
    """ResNet backbone + GAP + linear head; `cams` gives the bias-free class activation maps.

    Args:
        n_classes: number of image-level (multi-label) classes.
        base_width: ``small`` only: channels of the stem and first stage; doubled at each later
            stage (64 = ResNet-18 widths).
        blocks: ``small`` only: BasicBlocks per stage, four stages ((2, 2, 2, 2) = ResNet-18).
        output_stride: 8, 16 or 32. Below 32 the last stage(s) trade stride for dilation, so the
            CAM is finer (16x16 on a 256 tile at 16) while the receptive field stays the same.
        pretrained_backbone: optional local path of a state_dict holding exactly this backbone
            (see :func:`load_backbone_weights`); never downloaded.
        backbone: one of :data:`BACKBONES` (``localization.backbone``).
        relation: settings of a PRC module (models/pixel_relation.py) on the backbone features;
            then `cams` and the logits are the refined ones. None: no module.
    """

    def __init__(
        self,
        n_classes: int,
        base_width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        output_stride: int = 16,
        pretrained_backbone: str | Path | None = None,
        backbone: str = "small",
        relation: RelationSpec | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in _DILATED_STAGES:
            raise ValueError(
                f"output_stride (parameter `localization.output_stride`) must be one of "
                f"{sorted(_DILATED_STAGES)}, got {output_stride}"
            )
        if backbone not in BACKBONES:
            raise ValueError(
                f"parameter `{_PARAM_BACKBONE}` must be one of {list(BACKBONES)}, got {backbone!r}"
            )
        self.n_classes = n_classes
        self.output_stride = output_stride
        self.backbone = backbone
        if backbone == "small":
            modules, n_features = _small_backbone(base_width, blocks, output_stride)
        else:
            modules, n_features = _torchvision_backbone(backbone, output_stride)
        for name, module in modules.items():
            setattr(self, name, module)
        self.n_features = n_features
        # Named `head`, not `fc`, so an ImageNet classifier is never loaded by key matching.
        self.head = nn.Linear(n_features, n_classes)
        if backbone == "small":
            # After the head, as before the torchvision backbones existed: same seed, same init.
            # (torchvision initialises its ResNets itself, with this same Kaiming rule.)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if pretrained_backbone is not None:
            load_backbone_weights(self, pretrained_backbone)
        # Last, and only when asked: no pretrained file holds it, the default init and
        # state_dict stay as before.
        self.relation = PixelRelation(n_features, relation) if relation is not None else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map F (B, K, H/stride, W/stride)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes); with a PRC module, the spatial mean of the refined CAM + bias."""
        features = self.features(x)
        if self.relation is None:
            return self.head(features.mean(dim=(2, 3)))
        return self.refined_cams(features).mean(dim=(2, 3)) + self.head.bias

    def raw_cams(self, features: torch.Tensor) -> torch.Tensor:
        """Classic CAM (B, n_classes, h, w) of a feature map: head weights at each location, no bias."""
        return torch.einsum("ck,bkhw->bchw", self.head.weight, features)

    def refined_cams(self, features: torch.Tensor) -> torch.Tensor:
        """A . raw CAM (needs a PRC module)."""
        if self.relation is None:
            raise RuntimeError("refined_cams needs a PRC module (localization.prc_module.enabled)")
        return self.relation(features, self.raw_cams(features))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """The CAM the localizer outputs (B, n_classes, h, w): classic, or refined with a PRC module."""
        features = self.features(x)
        return self.raw_cams(features) if self.relation is None else self.refined_cams(features)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint: a plain state_dict or one wrapped under "state_dict" /
    "model", with any DataParallel "module." prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"pretrained backbone weights not found at {path} (parameter `{_PARAM_FILE}`; "
            "a local file is expected, nothing is downloaded — set it to null to train from "
            "scratch)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        raise UserInputError(
            f"file {path} is not a readable pretrained backbone checkpoint (parameter `{_PARAM_FILE}`): "
            f"torch.load failed with {type(err).__name__}"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(
            f"{path} (parameter `{_PARAM_FILE}`) is not a state_dict of tensors "
            "(plain, or under 'state_dict' / 'model')"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _first(keys: Sequence[str]) -> str:
    """The first few keys for an error message, with how many more there are."""
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f", ... (+{len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else "")


def check_backbone_fit(
    own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> list[str]:
    """Problems that stop `state` (classifier keys already dropped) from filling `own`.

    Every key of `own` must be in `state` with the same shape (BN step counters may be absent),
    and `state` may hold nothing else.
    """
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(own)} backbone tensors missing: {_first(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_first(mismatched)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors: {_first(unexpected)}")
    return problems


def load_backbone_weights(model: CAMClassifier, path: str | Path) -> int:
    """Load every backbone tensor of `model` from the local checkpoint at `path`.

    The file's classifier (`fc.*`, or `head.*` of a CAMClassifier checkpoint) is ignored and
    `model.head` keeps its init. Anything short of an exact fit of the declared backbone — a
    missing tensor, a shape mismatch, an extra non-classifier tensor — raises ValueError naming
    the file and `localization.backbone`. Returns the number of tensors loaded.
    """
    state = {
        k: v for k, v in read_state_dict(path).items() if not k.startswith(_CLASSIFIER_PREFIXES)
    }
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    problems = check_backbone_fit(own, state)
    if problems:
        raise UserInputError(
            f"pretrained backbone {path} (parameter `{_PARAM_FILE}`) does not hold the declared "
            f"`{_PARAM_BACKBONE}: {model.backbone}`: " + "; ".join(problems) + ". Hint: set "
            f"{_PARAM_BACKBONE} to the architecture the file holds (for `small`, base_width and "
            "blocks must match too), or point pretrained_backbone at a file of that architecture."
        )
    model.load_state_dict(state, strict=False)
    logger.info(
        "Loaded %d backbone tensors of %s from %s (head kept at its init)",
        len(state),
        model.backbone,
        path,
    )
    return len(state)
