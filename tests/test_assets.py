"""The shipped demo assets: a small trained model and a sample image whose labels are known."""

import numpy as np
import torch

from deeplab_fast import assets
from deeplab_fast.inference.segmenter import Segmenter
from deeplab_fast.metrics import ConfusionMatrix
from deeplab_fast.models.weights import read_model_info


def test_demo_model_file_is_small_and_describes_itself():
    path = assets.demo_model_path()
    assert path.stat().st_size <= 2_000_000
    info = read_model_info(path)
    assert info["model"]["backbone"] == "mobilenet_v2" and info["model"]["num_classes"] == 4
    assert info["class_names"] == list(assets.DEMO_CLASS_NAMES)
    assert info["palette"] == [list(c) for c in assets.DEMO_PALETTE]
    assert info["mean"] == [0.485, 0.456, 0.406] and info["std"] == [0.229, 0.224, 0.225]


def test_sample_image_is_the_synthetic_shapes_it_claims():
    from deeplab_fast.data import SyntheticShapes

    img = assets.sample_image()
    assert img.mode == "RGB" and img.size == (assets.SAMPLE_SIZE, assets.SAMPLE_SIZE)
    image, mask = SyntheticShapes(1, assets.SAMPLE_SIZE, 4, seed=assets.SAMPLE_SEED, max_shapes=4).load(0)
    assert np.array_equal(np.asarray(img), image.permute(1, 2, 0).numpy())
    labels = assets.sample_labels()
    assert np.array_equal(labels, mask.numpy()) and set(np.unique(labels)) == {0, 1, 2, 3}


def test_demo_model_segments_the_sample_image():
    torch.set_num_threads(1)
    model = assets.demo_model()
    assert not model.training
    labels = Segmenter(model).predict(assets.sample_image())  # the README's example, optimized model
    truth = torch.from_numpy(assets.sample_labels()).long()
    accuracy = float((labels == truth).float().mean())
    cm = ConfusionMatrix(4)
    cm.update(labels[None], truth[None])
    iou = cm.compute()["IoU"]
    assert accuracy > 0.95, accuracy  # chance level for 4 classes is far below
    assert min(float(v) for v in iou) > 0.7, iou  # every shape class is found, not just the background
