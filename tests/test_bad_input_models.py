"""Bad arguments to the model builder and bad inputs to a model's forward: clear errors that name their cause."""

import pytest
import torch

import deeplab_fast
from deeplab_fast.models import deeplabv3plus
from tests._model_helpers import small_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"aspp_channels": 0}, ValueError, "aspp_channels must be an int >= 1"),
        ({"aspp_channels": -8}, ValueError, "aspp_channels must be an int >= 1"),
        ({"aspp_channels": 16.0}, ValueError, "aspp_channels must be an int >= 1"),
        ({"low_level_channels": 0}, ValueError, "low_level_channels must be an int >= 1"),
        ({"low_level_channels": -1}, ValueError, "low_level_channels must be an int >= 1"),
        ({"decoder_convs": 1.0}, ValueError, "decoder_convs must be an int >= 1"),
        ({"multi_grid": (1, 0, 2)}, ValueError, "multi_grid must be a sequence of ints >= 1"),
        ({"multi_grid": (1, 2.0, 4)}, ValueError, "multi_grid must be a sequence of ints >= 1"),
        ({"output_stride": 16.0}, ValueError, "output_stride must be one of the ints"),
        ({"output_stride": True}, ValueError, "output_stride must be one of the ints"),
        ({"width_mult": 0}, ValueError, "width_mult must be a finite number > 0"),
        ({"width_mult": -0.5}, ValueError, "width_mult must be a finite number > 0"),
        ({"width_mult": float("nan")}, ValueError, "width_mult must be a finite number > 0"),
        ({"width_mult": "0.5"}, ValueError, "width_mult must be a finite number > 0"),
        ({"separable": "no"}, TypeError, "separable must be True or False"),
        ({"align_corners": "no"}, TypeError, "align_corners must be True or False"),
        ({"decoder": 1}, TypeError, "decoder must be True or False"),
        ({"aux_head": "yes"}, TypeError, "aux_head must be True or False"),
        ({"output_dict": "false"}, TypeError, "output_dict must be True or False"),
        ({"separable_inner_bn": "no"}, TypeError, "separable_inner_bn must be True or False"),
        ({"dilate_first_block": 0}, TypeError, "dilate_first_block must be True or False"),
        ({"aspp_separable": "no"}, TypeError, "aspp_separable must be True, False or None"),
        ({"decoder_separable": "no"}, TypeError, "decoder_separable must be True, False or None"),
        ({"aspp_dropout": 1.5}, ValueError, r"aspp_dropout must be a number in \[0, 1\]"),
        ({"bn_eps": 0}, ValueError, "bn_eps must be a finite number > 0"),
        ({"aspp_rates": (6, 12)}, ValueError, "aspp_rates must be three ints >= 1"),
        ({"aspp_rates": (6, 12, 18.0)}, ValueError, "aspp_rates must be three ints >= 1"),
    ],
)
def test_builder_rejects_bad_arguments_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        deeplabv3plus("resnet50", **kwargs)


def test_builder_accepts_lists_for_sequences():
    m = deeplabv3plus("resnet50", output_stride=8, multi_grid=[1, 2, 4], aspp_rates=[2, 4, 6], width_mult=0.25)
    assert [b.conv2.dilation[0] for b in m.backbone.layer4] == [4, 8, 16] and m.aspp.rates == (2, 4, 6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_input_dtype_other_than_the_models_is_a_clear_error_before_any_conv(dtype, monkeypatch):
    m = small_model("mobilenet_v2").eval()
    calls = []
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(TypeError, match=r"input dtype .* does not match the model's dtype torch.float32; .*x.to"):
        m(torch.randn(1, 3, 64, 64, dtype=dtype))
    assert not calls


def test_input_dtype_check_on_an_optimized_model_and_under_autocast():
    m = small_model("mobilenet_v2").eval()
    f = deeplab_fast.optimize(m)
    with pytest.raises(TypeError, match="model's dtype torch.float32"):
        f(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)).shape == (1, 5, 64, 64)


def test_training_with_a_batch_of_one_is_a_clear_error():
    m = small_model("mobilenet_v2").train()
    with pytest.raises(ValueError, match="batch of 1 image in training mode.*BatchNorm"):
        m(torch.randn(1, 3, 64, 64))
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)
    m.aspp.pool.bn.eval()  # frozen BatchNorm: a single image is fine
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)
