"""End to end on CPU: a small DeepLabV3+ trained on synthetic shapes reaches mIoU >= 0.8 on held-out images."""

import pytest

from deeplab_fast.training import Trainer, config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_small_model_reaches_miou_on_synthetic_shapes(tmp_path):
    # DeepLabV3+ with a MobileNetV2 backbone at half width and narrow heads: about 1.2M parameters
    model = {
        "backbone": "mobilenet_v2",
        "num_classes": 3,
        "output_stride": 16,
        "options": {"width_mult": 0.5, "aspp_channels": 64, "low_level_channels": 24},
    }
    config = config_from_dict(
        {
            "model": model,
            "data": {
                "dataset": "synthetic",
                "crop_size": 64,
                "eval_crop_size": 64,
                "scale_range": [0.75, 1.25],
                "num_workers": 0,
                "synthetic": {"train_length": 256, "val_length": 32, "size": 64, "max_shapes": 3, "seed": 0},
            },
            "train": {
                "iterations": 80,
                "batch_size": 8,
                "lr": 0.05,
                "weight_decay": 1e-4,
                "warmup_iters": 5,
                "device": "cpu",
                "seed": 0,
                "output_dir": str(tmp_path / "run"),
                "log_every": 10,
                "checkpoint_every": 1000,
                "tensorboard": False,
            },
        }
    )
    trainer = Trainer(config, progress=False)
    metrics = trainer.train()
    losses = [loss for _, loss in trainer.history]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert metrics["mIoU"] >= 0.8, metrics
    assert all(v > 0.5 for v in metrics["IoU"])  # every class is learned, not only the background
