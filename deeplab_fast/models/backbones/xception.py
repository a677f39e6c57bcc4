"""Modified aligned Xception-65/71 (DeepLabV3+), following TensorFlow DeepLab's xception.py layout.

Every max pooling is a stride-2 separable conv, every depthwise conv is followed by BN, the entry and
middle flows use pre-activation units (ReLU -> depthwise -> BN -> pointwise -> BN) and the last exit
block uses ReLU inside its separable convs. Low-level features are the pointwise output of the second
separable conv of the entry block that runs at stride 4 (TensorFlow's decoder end point).
"""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast.models.backbones import dilation_schedule
from deeplab_fast.models.layers import ConvBNAct, SeparableConv, scaled

# (depths, stride, skip, relu inside separable convs, low-level tap)
_ENTRY = {
    "xception65": [
        ((128,) * 3, 2, "conv", False, False),
        ((256,) * 3, 2, "conv", False, True),
        ((728,) * 3, 2, "conv", False, False),
    ],
    "xception71": [
        ((128,) * 3, 2, "conv", False, False),
        ((256,) * 3, 1, "conv", False, False),
        ((256,) * 3, 2, "conv", False, True),
        ((728,) * 3, 1, "conv", False, False),
        ((728,) * 3, 2, "conv", False, False),
    ],
}
_MIDDLE = [((728,) * 3, 1, "sum", False, False)] * 16
_EXIT = [((728, 1024, 1024), 2, "conv", False, False), ((1536, 1536, 2048), 1, "none", True, False)]


class XceptionBlock(nn.Module):
    """Three separable convs (stride on the last) plus a skip: "conv" (1x1 conv + BN), "sum" or "none".

    (N, Cin, H, W) -> (N, depths[2], Ho, Wo); with tap=True forward also returns the second conv's output.
    """

    def __init__(
        self,
        in_channels: int,
        depths: tuple[int, int, int],
        *,
        stride: int,
        dilation: int,
        skip: str,
        act_in_separable: bool,
        tap: bool,
        eps: float,
    ) -> None:
        super().__init__()
        act = "relu" if act_in_separable else "none"
        chans = (in_channels, *depths)
        self.sep1, self.sep2, self.sep3 = (
            SeparableConv(
                chans[i],
                chans[i + 1],
                stride=stride if i == 2 else 1,
                dilation=dilation,
                inner_bn=True,
                inner_act=act,
                out_act=act,
                pre_act=not act_in_separable,
                eps=eps,
            )
            for i in range(3)
        )
        self.skip = skip
        self.shortcut = (
            ConvBNAct(in_channels, depths[2], 1, stride=stride, act="none", eps=eps) if skip == "conv" else None
        )
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mid = self.sep2(self.sep1(x))
        out = self.sep3(mid)
        if self.skip == "conv":
            out = out + self.shortcut(x)
        elif self.skip == "sum":
            out = out + x
        return (out, mid) if self.tap else out


class Xception(nn.Module):
    """Aligned Xception-65 or -71 with atrous exit (and middle, at output stride 8) flows.

    Args:
        depth: "xception65" or "xception71".
        output_stride: 8, 16 or 32. Units past it keep stride 1 and multiply the dilation (the unit that
            would have strided still uses the old rate, as TensorFlow's stack_blocks_dense does).
        width_mult: scales every width (small test models); 1.0 is the real network.
        eps: BatchNorm eps (TensorFlow checkpoints use 1e-3).
    Forward: (N, 3, H, W) -> (low-level [stride 4, 256 ch], middle-flow output [728 ch], exit output [2048 ch]).
    """

    def __init__(
        self, depth: str = "xception65", *, output_stride: int = 16, width_mult: float = 1.0, eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(3, scaled(32, width_mult), 3, stride=2, eps=eps)
        self.conv2 = ConvBNAct(scaled(32, width_mult), scaled(64, width_mult), 3, eps=eps)
        specs = _ENTRY[depth] + _MIDDLE + _EXIT
        sched = dilation_schedule([s[1] for s in specs], 2, output_stride, dilate_first_block=False)
        n_entry = len(_ENTRY[depth])
        blocks, chans = [], scaled(64, width_mult)
        for (depths, _, skip, act_in, tap), (stride, dil, _) in zip(specs, sched, strict=True):
            depths = tuple(scaled(d, width_mult) for d in depths)
            blocks.append(
                XceptionBlock(
                    chans, depths, stride=stride, dilation=dil, skip=skip, act_in_separable=act_in, tap=tap, eps=eps
                )
            )
            if tap:
                self.low_level_channels = depths[1]
            chans = depths[2]
        self.entry_flow = nn.Sequential(*blocks[:n_entry])
        self.middle_flow = nn.Sequential(*blocks[n_entry : n_entry + 16])
        self.exit_flow = nn.Sequential(*blocks[n_entry + 16 :])
        self.mid_channels = scaled(728, width_mult)
        self.out_channels = chans

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv2(self.conv1(x))
        low = None
        for block in self.entry_flow:
            x = block(x)
            if isinstance(x, tuple):
                x, low = x
        mid = self.middle_flow(x)
        return low, mid, self.exit_flow(mid)
