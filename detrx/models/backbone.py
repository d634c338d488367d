"""Backbones: a small ResNet defined here and trained from scratch (no weights can be downloaded),
or a torchvision ResNet with weights from a local file when the user has them.

Both return the feature maps of the requested strides (8, 16, 32) with the padding mask resized
to each: list of (features [B, C_l, H/s_l, W/s_l], mask [B, H/s_l, W/s_l]).
"""
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs + identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


_STAGE_OF = {8: 1, 16: 2, 32: 3}  # stride -> index of the stage that outputs it


def _resize_mask(mask, size):
    """mask [B, H, W] -> [B, h, w] (nearest), True = padding."""
    return F.interpolate(mask[:, None].float(), size=size).bool()[:, 0]


class ResNet(nn.Module):
    """A ResNet of basic blocks: stem to stride 4, then stages at strides 4, 8, 16, 32.

    Args:
        widths: channels of the four stages.
        blocks: basic blocks per stage.
        return_strides: which of 8, 16, 32 to return, in increasing order.
    """

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), return_strides=(8, 16, 32)):
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(f"widths and blocks must have 4 entries (one per stage), got {widths}, {blocks}")
        if not return_strides or any(s not in (8, 16, 32) for s in return_strides) \
                or list(return_strides) != sorted(set(return_strides)):
            raise ValueError(f"return_strides must be increasing values among 8, 16, 32, got {return_strides}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
            nn.Conv2d(widths[0], widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, in_channels = [], widths[0]
        last = _STAGE_OF[max(return_strides)] + 1  # stages past the last returned one are not built
        for i, (width, count) in enumerate(zip(widths[:last], blocks[:last])):
            layers = [BasicBlock(in_channels, width, 1 if i == 0 else 2)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.return_strides = tuple(return_strides)
        self.num_channels = [widths[_STAGE_OF[s]] for s in self.return_strides]

    def forward(self, images, mask):
        """images [B, 3, H, W], mask [B, H, W] -> list of (features [B, C, h, w], mask [B, h, w])."""
        x, outputs = self.stem(images), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if 4 * 2 ** i in self.return_strides:
                outputs.append((x, _resize_mask(mask, x.shape[-2:])))
        return outputs


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet (imported lazily) with weights read from a local file."""

    def __init__(self, name, weights_path, return_strides=(8, 16, 32)):
        super().__init__()
        import torchvision  # optional dependency, only for this path

        net = getattr(torchvision.models, name)(weights=None)
        net.load_state_dict(torch.load(weights_path, map_location="cpu"))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        self.stages = nn.ModuleList(stages[:_STAGE_OF[max(return_strides)] + 1])
        self.return_strides = tuple(return_strides)
        last_conv = [stage[-1].conv3 if hasattr(stage[-1], "conv3") else stage[-1].conv2 for stage in stages]
        widths = [conv.out_channels for conv in last_conv]  # bottleneck or basic blocks
        self.num_channels = [widths[_STAGE_OF[s]] for s in self.return_strides]

    forward = ResNet.forward


def build_backbone(args, return_strides):
    """`--backbone tiny` (defined here, from scratch) or a torchvision ResNet name + `--backbone-weights`."""
    if args.backbone == "tiny":
        return ResNet(tuple(args.backbone_widths), tuple(args.backbone_blocks), return_strides)
    if not args.backbone_weights:
        raise ValueError(f"--backbone {args.backbone} needs --backbone-weights (a local state_dict file); "
                         f"nothing can be downloaded")
    return TorchvisionResNet(args.backbone, args.backbone_weights, return_strides)
