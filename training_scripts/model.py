"""The classifier: a small convolutional network in plain PyTorch, trained from scratch."""

from __future__ import annotations

from torch import nn

WIDTHS = (32, 64, 128)


def build_model(channels: int, num_classes: int) -> nn.Sequential:
    """Build a three-block CNN whose global pooling makes it work at any image size."""
    blocks = []
    in_width = channels
    for width in WIDTHS:
        blocks.append(_conv_block(in_width, width))
        in_width = width
    return nn.Sequential(
        *blocks,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(in_width, num_classes),
    )


def _conv_block(in_width: int, out_width: int) -> nn.Sequential:
    # The convolution's bias would be cancelled by the batch norm that follows it.
    return nn.Sequential(
        nn.Conv2d(in_width, out_width, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
