"""Export with a stand-in model: ONNX parity with onnxruntime (dynamo exporter), TorchScript by tracing.

torch.export of the eager and optimize()d models is tested with a real DeepLabV3+ in test_inference_model.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.inference.export import export_onnx, export_torchscript

K = 4


class TinySeg(nn.Module):
    """Conv + BN + ReLU at stride 2, a dilated depthwise conv, a 1x1 head, bilinear upsampling to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, K, 1)
        with torch.no_grad():
            for bn in (self.bn, self.bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn2(self.dw(self.features(x))))
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


class FusedTinySeg(TinySeg):
    """TinySeg with its depthwise conv + BN + ReLU through deeplab_fast's fused custom op (as optimize() does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = deeplab_fast.ops.fold_bn(self.bn2)
        y = deeplab_fast.ops.dwconv_bn_act(self.features(x), self.dw.weight, scale, shift, dilation=2, backend="cpu")
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def model() -> TinySeg:
    torch.manual_seed(0)
    return TinySeg().eval()


def test_onnx_export_matches_pytorch(model: TinySeg, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = export_onnx(model, tmp_path / "m.onnx", input_size=64)
    assert report.path == tmp_path / "m.onnx" and report.path.is_file()
    assert report.max_abs_error is not None and report.max_abs_error < 1e-4
    assert report.checked_shapes == [(1, 3, 64, 64), (2, 3, 72, 80)]  # dynamic batch and size
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the caller's model is untouched
    # independent of the report: run the file on another size
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 50, 66)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
    assert "max abs error" in str(report)


def test_onnx_export_errors(model: TinySeg, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(1, 4, 64, 64))
    with pytest.raises(ValueError, match="folder"):
        export_onnx(model, tmp_path, input_size=64)
    with pytest.raises(TypeError, match="nn.Module"):
        export_onnx(lambda x: x, tmp_path / "m.onnx", input_size=64)  # type: ignore[arg-type]


@pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built (the fused custom ops need it)")
def test_onnx_export_refuses_fused_model(model: TinySeg, tmp_path: Path) -> None:
    fused = FusedTinySeg().eval()
    fused.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="unfused model.*dwconv_bn_act"):
        export_onnx(fused, tmp_path / "f.onnx", input_size=64)
    assert not (tmp_path / "f.onnx").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_trace_runs_on_other_sizes(model: TinySeg, tmp_path: Path) -> None:
    report = export_torchscript(model, tmp_path / "m.pt", input_size=(48, 64))
    assert report.max_abs_error is not None and report.max_abs_error < 1e-5
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == (2, K, 40, 56)
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_exported_files_get_umask_permissions(model: TinySeg, tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        export_onnx(model, tmp_path / "m.onnx", input_size=32, check=False, exporter="torchscript")
        export_torchscript(model, tmp_path / "m.pt", input_size=32, check=False)
    finally:
        os.umask(old)
    for name in ("m.onnx", "m.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt"]  # no temporaries left
    with pytest.raises(ValueError, match="folder"):
        export_torchscript(model, tmp_path, input_size=32)
