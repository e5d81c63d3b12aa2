"""The bottleneck example, reproduced through specs and the cost model.

Szegedy et al. (2015), section 4: 1x1 reductions before expensive convolutions. On a
28x28x192 input, a 3x3 conv to 256 channels costs 346,816,512 multiply-adds; with a
64-wide 1x1 reduction first, 125,239,296.
"""

from __future__ import annotations

from inception_keras.cost import network_cost
from inception_keras.spec import ConvSpec, HeadSpec, NetworkSpec


def conv_stack_macs(stem: tuple[ConvSpec, ...], input_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of a stack of convolutions, read from the cost model."""
    spec = NetworkSpec("conv_stack", input_shape=input_shape, stem=stem, head=HeadSpec(dropout=0.0, classes=2))
    return sum(block.macs for block in network_cost(spec).blocks if block.type == "convolution")


def bottleneck_example(size: int = 28, channels: int = 192, width: int = 256, reduce: int = 64) -> tuple[int, int]:
    """(multiply-adds without, with) a `reduce`-wide 1x1 bottleneck before a 3x3 conv."""
    shape = (size, size, channels)
    return (conv_stack_macs((ConvSpec(width, 3),), shape),
            conv_stack_macs((ConvSpec(reduce, 1), ConvSpec(width, 3)), shape))


def bottleneck_text() -> str:
    plain, reduced = bottleneck_example()
    return (f"28x28x192 input, 3x3 conv to 256 channels: {plain:,} multiply-adds\n"
            f"with a 64-wide 1x1 reduction first:       {reduced:,} multiply-adds "
            f"({plain / reduced:.2f}x fewer)")
