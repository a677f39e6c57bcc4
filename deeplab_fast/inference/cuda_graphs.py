"""A forward replayed from CUDA graphs, one captured per input layout (Segmenter(..., cuda_graphs=True)).

At batch 1 a DeepLab forward on a GPU is bound by kernel launches (tens of microseconds of host work per
layer against a few microseconds of GPU work); a CUDA graph replays the whole forward with one launch.
Compiled against torch.cuda.graphs; never run on a GPU here (the capture needs one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map


def _capture_graph(fn: Callable[[torch.Tensor], Any], static_in: torch.Tensor, warmup: int) -> tuple[Any, Any]:
    """Warm `fn` up on a side stream, then capture one call on `static_in`: (graph, its static outputs)."""
    device = static_in.device
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        # lazy initialisation (cuDNN plans, packed weights, allocator pools) must not happen inside the capture
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)
    return graph, static_out


class GraphedForward:
    """Call `fn(x)` by replaying a CUDA graph captured once per input (shape, strides, dtype, device).

    The first call with a new input layout warms `fn` up (`warmup` calls on a side stream), captures one call
    into a graph with a static input buffer and replays it; later calls with that layout copy x into the
    static input, replay, and return copies of the static outputs (tensors inside tuples, lists or dicts too),
    which the next replay would overwrite. `fn` must run the same kernels whatever x's values (a model's
    forward in eval mode, autograd off) and only on x's device. Every graph keeps its memory for the life of
    this object: one per distinct input layout.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], *, warmup: int = 2) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if type(warmup) is not int or warmup < 1:
            raise ValueError(f"warmup must be an int >= 1, got {warmup!r}")
        self.fn = fn
        self.warmup = warmup
        self._graphs: dict[tuple, tuple[torch.Tensor, Any, Any]] = {}

    @property
    def captured(self) -> int:
        """How many graphs were captured (distinct input layouts seen)."""
        return len(self._graphs)

    def __call__(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
            static_in.copy_(x)
            graph, static_out = _capture_graph(self.fn, static_in, self.warmup)
            entry = self._graphs[key] = (static_in, graph, static_out)
        static_in, graph, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, static_out)
