"""Distributed training on CPU: torchrun with 2 gloo processes (DDP + SyncBatchNorm, sharded evaluation with an
all-reduced confusion matrix) matches one process with the same total batch."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from deeplab_fast.training import Trainer, config_from_dict
from deeplab_fast.training.logging import read_scalars

ROOT = Path(__file__).resolve().parents[1]


pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed"),
    pytest.mark.usefixtures("one_thread"),
]


def _config(out: Path) -> dict:
    return {
        "model": {"factory": "tiny_model:tiny_seg", "num_classes": 3, "options": {"dropout": 0.0}},
        "data": {
            "dataset": "synthetic",
            "crop_size": 32,
            "num_workers": 0,
            "synthetic": {"train_length": 16, "val_length": 4, "size": 40},
        },
        "train": {
            "iterations": 4,
            "batch_size": 4,
            "lr": 0.05,
            "weight_decay": 1e-4,
            "output_dir": str(out),
            "log_every": 1,
            "checkpoint_every": 4,
            "device": "cpu",
            "dist_backend": "gloo",
        },
    }


@pytest.mark.slow  # torchrun with two processes: tens of seconds
def test_two_process_gloo_matches_single_process(tmp_path):
    cfg_path = tmp_path / "dist.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path / "dist")))
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "deeplab_fast",
        "train",
        "--config",
        str(cfg_path),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dist_state = load_file(tmp_path / "dist" / "ckpt_0000004.safetensors")
    # the distributed model had its BatchNorms converted to SyncBatchNorm; the names are unchanged
    single = Trainer(config_from_dict(_config(tmp_path / "single")), progress=False)
    initial = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.train()
    ref = single.model.state_dict()
    assert set(ref) == set(dist_state)
    for name, value in ref.items():
        torch.testing.assert_close(dist_state[name], value, rtol=1e-5, atol=1e-5, msg=name)
    # evaluation sharded over the 2 ranks + all-reduced confusion matrix == single-process evaluation
    dist_miou = [v for s, n, v in read_scalars(tmp_path / "dist" / "scalars.csv") if n == "val/mIoU"]
    assert dist_miou == [pytest.approx(single.last_metrics["mIoU"], abs=1e-3)]
    # the parameters did move, so the comparison is not between two untouched models
    assert max(float((ref[k] - initial[k]).abs().max()) for k in ref if ref[k].is_floating_point()) > 1e-3


def test_convert_sync_batchnorm_shares_state_and_matches_batchnorm_outside_a_group():
    from deeplab_fast.training import CPUSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, eps=1e-3))
    reference = copy.deepcopy(model)
    converted = convert_sync_batchnorm(model, "cpu")
    assert isinstance(converted[1], CPUSyncBatchNorm) and converted[1].eps == 1e-3
    assert set(converted.state_dict()) == set(reference.state_dict())
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(converted(x), reference(x))  # no process group: plain BatchNorm
    torch.testing.assert_close(converted[1].running_mean, reference[1].running_mean)
