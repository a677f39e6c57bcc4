"""Trainer: config checks, schedule, checkpoints (atomic, truncated, wrong model), bit-identical resume,
gradient accumulation, frozen BN, AMP, multi-scale + flip evaluation, and the CLI."""

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import deeplab_fast.training.checkpoint as ckpt
from deeplab_fast.cli import main
from deeplab_fast.training import CheckpointError, ConfigError, PolyLR, Trainer, config_from_dict, load_config
from deeplab_fast.training.evaluate import predict_batch
from deeplab_fast.training.logging import read_scalars

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out: Path, **train) -> dict:
    return {
        "model": {"factory": "tiny_model:tiny_seg", "num_classes": 3},
        "data": {
            "dataset": "synthetic",
            "crop_size": 32,
            "eval_crop_size": 40,
            "num_workers": 0,
            "synthetic": {"train_length": 16, "val_length": 4, "size": 40},
        },
        "train": {
            "iterations": 6,
            "batch_size": 4,
            "lr": 0.05,
            "output_dir": str(out),
            "log_every": 1,
            "checkpoint_every": 3,
            "warmup_iters": 2,
            **train,
        },
    }


def _trainer(out: Path, resume=None, **train) -> Trainer:
    return Trainer(config_from_dict(_cfg(out, **train)), resume=resume, progress=False)


def test_config_errors_list_every_unknown_key(tmp_path):
    bad = _cfg(tmp_path)
    bad["train"]["lrate"] = 0.1
    bad["data"]["synthetic"]["colour"] = 1
    bad["optimiser"] = {}
    with pytest.raises(ConfigError) as err:
        config_from_dict(bad)
    for key in ("train.lrate", "data.synthetic.colour", "optimiser", "valid keys of train"):
        assert key in str(err.value)
    with pytest.raises(ConfigError, match="train.iterations must be int"):
        config_from_dict({"train": {"iterations": "many"}})
    with pytest.raises(ConfigError, match="train.amp must be one of"):
        config_from_dict({"train": {"amp": "fp8"}})
    with pytest.raises(ConfigError, match="needs data.root"):
        config_from_dict({"data": {"dataset": "voc"}})
    with pytest.raises(ConfigError, match="divisible"):
        _trainer(tmp_path, batch_size=5, grad_accum=2)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    from deeplab_fast.configs import CONFIG_DIR, list_configs

    monkeypatch.chdir(tmp_path)
    assert {"voc_xception65", "cityscapes_xception65", "synthetic_demo", "demo_shapes"} <= set(list_configs())
    for name in list_configs():
        config = load_config(name)
        assert config.model.backbone in ("xception65", "mobilenet_v2")
        assert config.to_dict() == load_config(CONFIG_DIR / f"{name}.yaml").to_dict()
    with pytest.raises(ConfigError, match="not a packaged config"):
        load_config("no_such_config")


def test_poly_schedule_with_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = PolyLR(opt, total_iters=10, power=0.9, warmup_iters=2, warmup_factor=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001)  # warm-up starts at warmup_factor * lr
    assert lrs[1] == pytest.approx(0.01 * 0.9**0.9 * 0.55)
    assert lrs[5] == pytest.approx(0.01 * 0.5**0.9)
    assert opt.param_groups[0]["lr"] == 0.0


def test_resume_gives_the_same_losses_and_logs(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.train()
    first = _trainer(tmp_path / "b")
    first.train(4)  # interrupted after step 4; the newest checkpoint is step 3
    resumed = _trainer(tmp_path / "b", resume="auto")
    assert (resumed.step, resumed.epoch, resumed.position) == (3, 0, 12)
    resumed.train()
    assert first.history[:3] + resumed.history == straight.history  # bit-identical on CPU
    a, b = (
        load_file(tmp_path / "a" / "ckpt_0000006.safetensors"),
        load_file(tmp_path / "b" / "ckpt_0000006.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a second epoch began (16 samples / 4 per step): the data position carried over correctly
    assert resumed.epoch == 1
    run = tmp_path / "a"
    assert (run / "curves.png").stat().st_size > 0 and (run / "best.safetensors").is_file()
    names = {n for _, n, _ in read_scalars(run / "scalars.csv")}
    assert {"train/loss", "train/lr", "train/img_per_s", "val/mIoU"} <= names
    steps = [s for s, n, _ in read_scalars(tmp_path / "b" / "scalars.csv") if n == "train/loss"]
    assert steps == list(range(1, 7))  # the resumed run replaced the rows after its checkpoint
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt_0000003.safetensors", "ckpt_0000006.safetensors"]
    pruned = _trainer(tmp_path / "c", keep_last=1, checkpoint_every=2)
    pruned.train()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "c")] == ["ckpt_0000006.safetensors"]


def test_checkpoint_errors_and_atomic_writes(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path / "run", iterations=3)
    trainer.train()
    good = tmp_path / "run" / "ckpt_0000003.safetensors"
    before = good.read_bytes()
    # a crash in the middle of writing the next checkpoint leaves the previous one untouched and no temp files
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def crash(tensors, path, metadata=None):
        real_save(tensors, path, metadata)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    trainer.step = 4
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert not list((tmp_path / "run").glob(".*tmp")) and not (tmp_path / "run" / "ckpt_0000004.safetensors").exists()
    # a truncated file: a clear error naming it
    truncated = tmp_path / "run" / "ckpt_0000009.safetensors"
    truncated.write_bytes(before[: len(before) // 2])
    with pytest.raises(CheckpointError, match=r"ckpt_0000009\.safetensors' is not a readable .* \(truncated"):
        _trainer(tmp_path / "run", resume=truncated)
    # weights of another model: the mismatching tensors are listed
    other = _cfg(tmp_path / "other")
    other["model"]["num_classes"] = 5
    with pytest.raises(CheckpointError, match=r"does not match this model.*\n.*shape mismatch.*classifier"):
        Trainer(config_from_dict(other), resume=good, progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        _trainer(tmp_path / "run", resume=tmp_path / "nope.safetensors")
    # fine-tuning from trained weights (model.weights) starts from them at step 0
    tuned = _cfg(tmp_path / "tuned")
    tuned["model"]["weights"] = str(good)
    fine = Trainer(config_from_dict(tuned), progress=False)
    assert fine.step == 0 and torch.equal(fine.model.classifier.weight, trainer.model.classifier.weight)


def test_grad_accumulation_matches_full_batch_and_frozen_bn(tmp_path):
    opts = {"iterations": 2, "freeze_bn": True, "checkpoint_every": 100}
    full = _trainer(tmp_path / "full", **opts)
    bn = full.model.features[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach().clone())
    full.model.features[-1].p = 0.0  # no dropout: the two runs must see the same function
    full.train()
    accum = _trainer(tmp_path / "accum", grad_accum=2, **opts)
    accum.model.features[-1].p = 0.0
    accum.train()
    assert accum.micro_batch == 2 and full.micro_batch == 4
    for (name, a), b in zip(full.model.state_dict().items(), accum.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.weight.detach(), stats[2])  # frozen BN: statistics and affine parameters unchanged


def test_bf16_autocast_and_channels_last_train(tmp_path):
    trainer = _trainer(tmp_path / "amp", amp="bf16", channels_last=True, iterations=2)
    metrics = trainer.train()
    assert all(math.isfinite(loss) for _, loss in trainer.history)
    assert 0.0 <= metrics["mIoU"] <= 1.0


def test_multiscale_flip_prediction_averages_softmax():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 8, 10)
    single = predict_batch(model, x, 4)
    assert torch.equal(single, model(x).argmax(1))
    with torch.no_grad():
        expected = torch.zeros(2, 4, 8, 10)
        for s in (0.5, 1.0):
            xs = torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear") if s != 1.0 else x
            for flip in (False, True):
                y = model(xs.flip(-1) if flip else xs)
                y = y.flip(-1) if flip else y
                expected += torch.nn.functional.interpolate(y, size=(8, 10), mode="bilinear").softmax(1)
    assert torch.equal(predict_batch(model, x, 4, scales=(0.5, 1.0), flip=True), expected.argmax(1))


def test_cli_train_and_eval(tmp_path, capsys):
    import yaml

    cfg = copy.deepcopy(_cfg(tmp_path / "cli", iterations=2))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    assert "final mIoU" in capsys.readouterr().out
    weights = tmp_path / "cli" / "ckpt_0000002.safetensors"
    out = tmp_path / "m.json"
    rc = main(
        [
            "eval",
            "--config",
            str(path),
            "--weights",
            str(weights),
            "--scales",
            "0.75",
            "1.0",
            "--flip",
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "mIoU" in text and "background" in text and out.is_file()
    assert main(["train", "--config", str(path), "--set", "train.momentom=0.9"]) == 2
    assert "train.momentom" in capsys.readouterr().err
    assert main(["eval", "--config", str(path), "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_real_model_with_aux_head_output_dict(tmp_path):
    cfg = _cfg(tmp_path / "aux", iterations=2, checkpoint_every=100)
    cfg["model"] = {
        "backbone": "resnet50",
        "num_classes": 3,
        "output_stride": 16,
        "options": {"width_mult": 0.125, "aspp_channels": 16, "low_level_channels": 8, "aux_head": True,
                    "output_dict": True},
    }  # fmt: skip
    trainer = Trainer(config_from_dict(cfg), progress=False)
    aux_before = trainer.model.aux.classifier.weight.detach().clone()
    metrics = trainer.train()
    assert not torch.equal(aux_before, trainer.model.aux.classifier.weight.detach())  # the aux loss trains its head
    assert 0.0 <= metrics["mIoU"] <= 1.0


def test_cli_on_voc_layout_and_missing_dataset(tmp_path, capsys):
    import yaml
    from test_data import _voc

    root = _voc(tmp_path / "voc", ids=("a", "b", "c", "d"))
    cfg = {
        "model": {"factory": "tiny_model:tiny_seg", "num_classes": 21},
        "data": {"dataset": "voc", "root": str(root), "train_split": "train", "crop_size": 32, "eval_crop_size": 32,
                 "num_workers": 0},
        "train": {"iterations": 1, "batch_size": 2, "output_dir": str(tmp_path / "run")},
    }  # fmt: skip
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    assert "aeroplane" in capsys.readouterr().out  # the per-class table names the VOC classes
    missing = str(tmp_path / "elsewhere")
    assert main(["train", "--config", str(path), "--set", f"data.root={missing}"]) == 2
    err = capsys.readouterr().err
    assert "elsewhere" in err and "JPEGImages" in err and "SegmentationClass" in err
    assert main(["train", "--config", str(path), "--set", "model.num_classes=3"]) == 2
    assert "21 classes" in capsys.readouterr().err


def test_evaluate_multiscale_flip_matches_reference_path():
    from deeplab_fast.training.evaluate import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 1))
    images = torch.randn(3, 3, 36, 40)
    masks = torch.randint(0, 4, (3, 36, 40))
    masks[:, :4] = 255
    cm = evaluate(model, [(images, masks)], 4, torch.device("cpu"), scales=(0.75, 1.0, 1.25), flip=True)
    pred = predict_batch(model, images, 4, scales=(0.75, 1.0, 1.25), flip=True)
    valid = masks != 255
    assert int(cm.matrix.sum()) == int(valid.sum())
    assert int(cm.matrix.diag().sum()) == int((pred == masks)[valid].sum())


def test_model_normalization_drives_the_data_transforms():
    """model.options input_mean/input_std (a TF-ported model's 0.5/0.5) define the training normalisation; a
    data.mean that contradicts them is a ConfigError."""
    from deeplab_fast.training.builders import normalization
    from deeplab_fast.training.config import Config, ConfigError

    cfg = Config()
    assert normalization(cfg) == (cfg.data.mean, cfg.data.std)
    cfg.model.options = {"input_mean": [0.5, 0.5, 0.5], "input_std": [0.5, 0.5, 0.5]}
    assert normalization(cfg) == ([0.5] * 3, [0.5] * 3)
    cfg.data.mean = [0.4, 0.4, 0.4]
    with pytest.raises(ConfigError, match="data.mean"):
        normalization(cfg)
