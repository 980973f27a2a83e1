"""The segmentation expert: a U-Net decoder over the ConvNeXt pyramid, five lesion logits at input resolution.

Why the last x4 is not one bilinear jump: ConvNeXt's finest map is at stride 4 (its patchify stem has no stride-2
output). A U-Net that stops at stride 4 and interpolates x4 draws every boundary from a 4x4-pixel grid; a
microaneurysm is a few pixels across at the model's input size, so it is smeared into a faint blob or lost. Here
the decoder keeps going with real skips: a light stem (three small convs on the input image) gives a stride-2
skip and a stride-1 skip, so the last two x2 steps can place edges from the image itself rather than guess them.

Channels are modest (default 128, 64, 32, 16 from stride 16 to stride 2, 16/8 in the stem) because the finest
blocks run at 1/4 and 1/1 of the input's pixels, where cost grows with the square of the resolution and the
studio trains on CPUs. The stem has 8 channels at full resolution and 16 at stride 2, so it costs little even at full
resolution.

Normalisation is GroupNorm, not BatchNorm: with gated routing the decoder sees a sub-batch whose size changes
every step and is often 1 or 2 samples, where BatchNorm's batch statistics are noise and its running averages
drift from what the eval batches see. GroupNorm normalises each sample on its own, so a sample's prediction does
not depend on which other samples were routed with it (the ConvNeXt backbone, with LayerNorm, has the same
property), and train and eval behave alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.vocabulary import NUM_LESIONS  # one output channel per lesion of the lesion table


def _groups(channels: int, max_groups: int = 8) -> int:
    """Largest group count <= max_groups dividing ``channels`` (GroupNorm needs an exact division)."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


class ConvNormAct(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.GELU(),
        )


class Stem(nn.Module):
    """Shallow full-resolution and stride-2 features straight from the image: the skips ConvNeXt cannot give."""

    def __init__(self, in_channels: int = 3, full_channels: int = 8, half_channels: int = 16) -> None:
        super().__init__()
        self.stride1 = ConvNormAct(in_channels, full_channels)
        self.stride2 = nn.Sequential(ConvNormAct(full_channels, half_channels, stride=2),
                                  ConvNormAct(half_channels, half_channels))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = self.stride1(images)
        return full, self.stride2(full)


class UpBlock(nn.Module):
    """x2 bilinear upsample to the skip's exact size, concatenate the skip, two 3x3 convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels + skip_channels, out_channels)
        self.conv2 = ConvNormAct(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        # Sizes, not a scale factor: inputs that are not multiples of 32 leave odd-sized maps in the pyramid.
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip.to(x.dtype)], dim=1)
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    """(images, [f4, f8, f16, f32]) -> lesion logits (n, 5, H, W) at the images' own size.

    Blocks: 32->16 (+f16), 16->8 (+f8), 8->4 (+f4), 4->2 (+stem stride-2), then 2->1 (+stem full-resolution)
    with one 3x3 conv and the 1x1 head.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
        stem_channels: int = 16,
        full_channels: int = 8,
        num_classes: int = NUM_LESIONS,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        encoder_channels = list(encoder_channels)
        decoder_channels = list(decoder_channels)
        if len(encoder_channels) != 4 or len(decoder_channels) != 4:
            raise ValueError(f"expected 4 encoder and 4 decoder stages, got {encoder_channels} and {decoder_channels}")
        self.stem = Stem(in_channels, full_channels, stem_channels)
        skips = [encoder_channels[2], encoder_channels[1], encoder_channels[0], stem_channels]
        ins = [encoder_channels[3], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(UpBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))
        final = decoder_channels[-1]
        self.final = ConvNormAct(final + full_channels, final)
        self.head = nn.Conv2d(final, num_classes, 1)
        # Lesions cover 0.1-2% of the pixels: start every channel at p ~ 0.01 so the first steps are not spent
        # unlearning a 50% foreground guess (the prior-probability init of RetinaNet).
        nn.init.constant_(self.head.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        full, half = self.stem(images)
        f4, f8, f16, f32 = features
        x = f32
        for block, skip in zip(self.blocks, (f16, f8, f4, half)):
            x = block(x, skip)
        x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)
        x = self.final(torch.cat([x, full.to(x.dtype)], dim=1))
        return self.head(x)
