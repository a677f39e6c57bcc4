"""Modified aligned Xception-41/65/71 (DeepLabV3+), following TensorFlow DeepLab's xception.py layout.

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
_ENTRY["xception41"] = _ENTRY["xception65"]
_MIDDLE_UNIT = ((728,) * 3, 1, "sum", False, False)
_MIDDLE_UNITS = {"xception41": 8, "xception65": 16, "xception71": 16}
_EXIT = [((728, 1024, 1024), 2, "conv", False, False), ((1536, 1536, 2048), 1, "none", True, False)]


class XceptionBlock(nn.Module):
    """Three separable convs (stride on the last) plus a skip: "conv" (1x1 conv + BN), "sum" or "none".

    Conv i runs at dilation * unit_rates[i] (TensorFlow's unit_rate_list: multi-grid of the last exit block).

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
        unit_rates: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        act = "relu" if act_in_separable else "none"
        chans = (in_channels, *depths)
        self.sep1, self.sep2, self.sep3 = (
            SeparableConv(
                chans[i],
                chans[i + 1],
                stride=stride if i == 2 else 1,
                dilation=dilation * unit_rates[i],
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
    """Aligned Xception-41, -65 or -71 with atrous exit (and middle, at output stride 8) flows.

    Args:
        depth: "xception41", "xception65" or "xception71".
        output_stride: 8, 16 or 32. Units past it keep stride 1 and multiply the dilation.
        multi_grid: dilation multipliers of the 3 separable convs of the last exit block (TensorFlow's
            multi_grid / unit_rate_list), e.g. (1, 2, 4); None for all ones.
        dilate_first_block: whether the unit that would have strided already uses the new dilation (True) or
            still the old one (False, TensorFlow's stack_blocks_dense: the exact atrous rule).
        width_mult: scales every width (small test models); 1.0 is the real network.
        eps: BatchNorm eps (TensorFlow checkpoints use 1e-3).
    Forward: (N, 3, H, W) -> (low-level [stride 4, 256 ch], middle-flow output [728 ch], exit output [2048 ch]).
    The low-level tap is the second separable conv's BN output before the next unit's ReLU (TensorFlow's decoder
    end point); timm's features_only gives the same tensor after that ReLU.
    """

    def __init__(
        self,
        depth: str = "xception65",
        *,
        output_stride: int = 16,
        multi_grid: tuple[int, ...] | None = None,
        dilate_first_block: bool = False,
        width_mult: float = 1.0,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if multi_grid is not None and len(multi_grid) != 3:
            raise ValueError(
                f"multi_grid must have 3 entries for {depth} (the separable convs of the last exit block), "
                f"got {multi_grid!r}"
            )
        self.conv1 = ConvBNAct(3, scaled(32, width_mult), 3, stride=2, eps=eps)
        self.conv2 = ConvBNAct(scaled(32, width_mult), scaled(64, width_mult), 3, eps=eps)
        n_entry, n_middle = len(_ENTRY[depth]), _MIDDLE_UNITS[depth]
        specs = _ENTRY[depth] + [_MIDDLE_UNIT] * n_middle + _EXIT
        sched = dilation_schedule([s[1] for s in specs], 2, output_stride, dilate_first_block)
        blocks, chans = [], scaled(64, width_mult)
        for i, ((depths, _, skip, act_in, tap), (stride, dil, _)) in enumerate(zip(specs, sched, strict=True)):
            depths = tuple(scaled(d, width_mult) for d in depths)
            last = i == len(specs) - 1
            blocks.append(
                XceptionBlock(
                    chans,
                    depths,
                    stride=stride,
                    dilation=dil,
                    skip=skip,
                    act_in_separable=act_in,
                    tap=tap,
                    eps=eps,
                    unit_rates=tuple(multi_grid) if (last and multi_grid is not None) else (1, 1, 1),
                )
            )
            if tap:
                self.low_level_channels = depths[1]
            chans = depths[2]
        self.entry_flow = nn.Sequential(*blocks[:n_entry])
        self.middle_flow = nn.Sequential(*blocks[n_entry : n_entry + n_middle])
        self.exit_flow = nn.Sequential(*blocks[n_entry + n_middle :])
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
