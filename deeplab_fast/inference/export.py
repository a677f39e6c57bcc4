"""Exporting a segmentation model: ONNX (checked with onnxruntime) and TorchScript (by tracing).

deeplab_fast's fused kernels are custom operators that ONNX and TorchScript do not know, so both exports take
the eager (unfused) model; export_onnx refuses a model that calls them and says so. torch.export.export
handles both the eager and the optimize()d model (the fused ops have fake implementations), so it needs no
helper here.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from deeplab_fast._files import atomic_path
from deeplab_fast.inference.segmenter import model_logits

DEFAULT_INPUT_SIZE = (1, 3, 512, 512)


@dataclass
class ExportReport:
    """What an export wrote and how well the exported graph matches PyTorch.

    path: the written file. input_shape: the example input (N, 3, H, W). max_abs_error: the largest
    |exported - PyTorch| over the logits of every checked input (None if not checked). checked_shapes: the
    input shapes compared. note: why the check was skipped, or other remarks.
    """

    path: Path
    input_shape: tuple[int, int, int, int]
    max_abs_error: float | None = None
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    note: str = ""

    def __str__(self) -> str:
        err = "not checked" if self.max_abs_error is None else f"max abs error {self.max_abs_error:.3g}"
        return f"exported {self.path} (example input {self.input_shape}; {err}{'; ' + self.note if self.note else ''})"


class _OpRecorder(TorchDispatchMode):
    """Records the namespaces::names of the aten/custom operators that run."""

    def __init__(self) -> None:
        super().__init__()
        self.custom: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        ns = getattr(func, "namespace", "")
        if ns == "deeplab_fast":
            self.custom.add(str(func.name()))
        return func(*args, **(kwargs or {}))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: int | Sequence[int] | None = None,
    dynamic: bool = True,
    *,
    opset: int | None = None,
    check: bool = True,
    exporter: str = "auto",
) -> ExportReport:
    """Export `model` (N, 3, H, W) -> logits (N, K, H, W) to an ONNX file and compare it with PyTorch.

    model: an eager (not optimize()d) nn.Module; it is copied to the CPU in fp32 and eval mode, the original is
        left alone. path: the .onnx file, written atomically (one file, weights included) with the permissions
        of the umask (deeplab_fast._files).
    input_size: the example input: H (square), (H, W) or (N, 3, H, W); default (1, 3, 512, 512).
    dynamic: batch, height and width are dynamic in the graph (else fixed to the example's).
    opset: ONNX opset (default: the exporter's).
    check: run the file with onnxruntime on the example (and, when dynamic, on a second batch and size) and
        report the max abs error against PyTorch in the returned ExportReport.
    exporter: "dynamo" (torch.onnx.export(dynamo=True), through torch.export), "torchscript" (the older
        TorchScript-based exporter: deprecated by PyTorch, but several times faster to run) or "auto" (dynamo,
        retrying with torchscript and a warning carrying the first error if dynamo fails).
    Raises ValueError if the model calls deeplab_fast's fused ops.
    """
    shape = _input_shape(input_size)
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript'; got {exporter!r}")
    dest = _destination(path)
    net = _cpu_copy(model)
    example = torch.rand(shape) * 4.0 - 2.0
    recorder = _OpRecorder()
    with torch.no_grad(), recorder:
        net(example)
    if recorder.custom:
        raise ValueError(
            "export_onnx needs the unfused model: this one calls deeplab_fast's fused kernels "
            f"({', '.join(sorted(recorder.custom))}), which ONNX has no operators for. Export the model as it was "
            "before deeplab_fast.optimize()."
        )
    # a batch of 1 would be specialised to 1 by torch.export (its 0/1 rule), so trace a dynamic graph on 2
    trace_with = example if not dynamic or shape[0] > 1 else torch.cat([example, example.flip(-1)])
    with atomic_path(dest) as tmp:
        _onnx_export(net, trace_with, str(tmp), dynamic, opset, exporter)
    report = ExportReport(path=dest, input_shape=shape)
    if check:
        _check_onnx(net, dest, example, dynamic, report)
    return report


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, input_size: int | Sequence[int] | None = None, *, check: bool = True
) -> ExportReport:
    """Save a TorchScript version of the eager `model`, made with torch.jit.trace, and compare it with PyTorch.

    Tracing (not scripting) because it takes any model whose forward is plain tensor code; the traced graph
    keeps the input's size symbolic, so it runs on other sizes than the example (checked when `check`).
    model, path, input_size: as in export_onnx; the file is written atomically (load with torch.jit.load).
    """
    shape = _input_shape(input_size)
    dest = _destination(path)
    net = _cpu_copy(model)
    example = torch.rand(shape) * 4.0 - 2.0
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript files are still what some
        # deployment targets load
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(net, (example,), check_trace=False)
    with atomic_path(dest) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.jit.save(traced, str(tmp))
    report = ExportReport(path=dest, input_shape=shape)
    if check:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            loaded = torch.jit.load(str(dest))
        errs = []
        for x in _check_inputs(example, dynamic=True):
            with torch.no_grad():
                errs.append(float((loaded(x) - net(x)).abs().max()))
            report.checked_shapes.append(tuple(x.shape))
        report.max_abs_error = max(errs)
    return report


def _input_shape(input_size: int | Sequence[int] | None) -> tuple[int, int, int, int]:
    if input_size is None:
        return DEFAULT_INPUT_SIZE
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    try:
        dims = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) == 2:
        dims = (1, 3, *dims)
    if len(dims) != 4 or dims[1] != 3 or min(dims) < 1:
        raise ValueError(f"input_size must be H, (H, W) or (N, 3, H, W) of positive ints; got {input_size!r}")
    return dims  # type: ignore[return-value]


def _destination(path: str | os.PathLike) -> Path:
    dest = Path(path)
    if dest.is_dir():
        raise ValueError(f"path must be a file name; {dest} is a folder")
    return dest


def _cpu_copy(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()


def _onnx_export(
    net: nn.Module, example: torch.Tensor, path: str, dynamic: bool, opset: int | None, exporter: str
) -> None:
    if exporter != "torchscript":
        try:
            d = torch.export.Dim.DYNAMIC
            dyn = None
            if dynamic:
                dyn = {"x": {0: d, 2: d, 3: d}} if "x" in _forward_arg_names(net) else ({0: d, 2: d, 3: d},)
            extra = {} if opset is None else {"opset_version": opset}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net,
                    (example,),
                    path,
                    dynamo=True,
                    dynamic_shapes=dyn,
                    input_names=["image"],
                    output_names=["logits"],
                    external_data=False,
                    verbose=False,
                    **extra,
                )
            return
        except Exception as exc:  # noqa: BLE001 - with "auto" the second exporter gets its chance
            if exporter == "dynamo":
                raise
            warnings.warn(
                f"torch.onnx.export(dynamo=True) failed ({type(exc).__name__}: {str(exc)[:300]}); "
                "retrying with the TorchScript-based exporter",
                RuntimeWarning,
                stacklevel=3,
            )
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            net,
            (example,),
            path,
            dynamo=False,
            dynamic_axes=axes if dynamic else None,
            opset_version=opset or 17,
            input_names=["image"],
            output_names=["logits"],
        )


def _forward_arg_names(net: nn.Module) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(net.forward).parameters)
    except (TypeError, ValueError):
        return []


def _check_inputs(example: torch.Tensor, dynamic: bool) -> list[torch.Tensor]:
    inputs = [example]
    if dynamic:
        n, c, h, w = example.shape
        inputs.append(torch.rand(n + 1, c, h + 8, w + 16) * 4.0 - 2.0)
    return inputs


def _check_onnx(net: nn.Module, path: Path, example: torch.Tensor, dynamic: bool, report: ExportReport) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        report.note = "onnxruntime is not installed (pip install onnxruntime): not checked"
        return
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    errs = []
    for x in _check_inputs(example, dynamic):
        got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        with torch.no_grad():
            want = model_logits(net(x), x.shape[0])
        if got.shape != want.shape:
            raise RuntimeError(
                f"the ONNX model gave shape {tuple(got.shape)} for input {tuple(x.shape)}; "
                f"PyTorch gives {tuple(want.shape)}"
            )
        errs.append(float((got - want).abs().max()))
        report.checked_shapes.append(tuple(x.shape))
    report.max_abs_error = max(errs)
