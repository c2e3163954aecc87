"""Image-level classifier whose last features give class activation maps (APSAM eq. 1).

A ResNet-style backbone (BasicBlocks) -> global average pooling -> one linear layer. Because the
head is linear after the pooling, the classic CAM of class c is the same linear map applied at
every location: CAM_c(x, y) = sum_k w_ck f_k(x, y). Layer names follow torchvision's ResNet so a
local resnet18 state_dict can initialise the backbone where shapes agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

_STAGE_STRIDES = (1, 2, 2, 2)  # stem already divides by 4; stages 2-4 halve again
_STEM_STRIDE = 4


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


class CAMClassifier(nn.Module):
    """ResNet backbone + GAP + linear head; `cams` gives the bias-free class activation maps.

    Args:
        n_classes: number of image-level (multi-label) classes.
        base_width: channels of the stem and first stage; doubled at each later stage
            (64 = ResNet-18 widths).
        blocks: BasicBlocks per stage, four stages ((2, 2, 2, 2) = ResNet-18).
        output_stride: 8, 16 or 32. Below 32 the last stage(s) trade stride for dilation, so the
            CAM is finer (16x16 on a 256 tile at 16) while the receptive field stays the same.
        pretrained_backbone: optional local path of a torchvision ResNet state_dict; never
            downloaded.
    """

    def __init__(
        self,
        n_classes: int,
        base_width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        output_stride: int = 16,
        pretrained_backbone: str | Path | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive counts, got {tuple(blocks)}")
        self.n_classes = n_classes
        self.output_stride = output_stride

        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        in_ch, stride_so_far, dilation = base_width, _STEM_STRIDE, 1
        for i, (n_blocks, stride) in enumerate(zip(blocks, _STAGE_STRIDES, strict=True)):
            out_ch = base_width * 2**i
            if stride_so_far * stride > output_stride:
                # Replace the stride by dilation (DeepLab-style) to keep a finer CAM grid.
                dilation, stride = dilation * stride, 1
            stride_so_far *= stride
            layers = [BasicBlock(in_ch, out_ch, stride=stride, dilation=dilation)]
            layers += [BasicBlock(out_ch, out_ch, dilation=dilation) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            in_ch = out_ch
        self.n_features = in_ch
        # Named `head`, not `fc`, so an ImageNet classifier is never loaded by key matching.
        self.head = nn.Linear(in_ch, n_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if pretrained_backbone is not None:
            load_backbone_weights(self, pretrained_backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map F (B, K, H/stride, W/stride)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes)."""
        return self.head(self.features(x).mean(dim=(2, 3)))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Classic CAM (B, n_classes, h, w): head weights applied at each location, no bias."""
        return torch.einsum("ck,bkhw->bchw", self.head.weight, self.features(x))


def load_backbone_weights(model: nn.Module, path: str | Path) -> int:
    """Copy tensors of a local state_dict into `model` where key and shape agree.

    Returns the number of tensors copied. Accepts a plain state_dict or one wrapped under
    "state_dict"/"model", with or without a DataParallel "module." prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained backbone weights not found at {path} (local file expected; "
            "nothing is downloaded — set the path to null to train from scratch)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {k.removeprefix("module."): v for k, v in state.items()}

    own = {
        k: v
        for k, v in model.state_dict().items()
        # BN step counters are scalars that "match" any width: not evidence of a fit.
        if not k.startswith("head.") and not k.endswith("num_batches_tracked")
    }
    matched = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(matched, strict=False)
    logger.info(
        "Loaded %d of %d backbone tensors from %s (%d in file; others keep their init)",
        len(matched),
        len(own),
        path,
        len(state),
    )
    if not matched:
        logger.warning("No tensor of %s matched the CAM classifier's keys and shapes", path)
    return len(matched)
