"""Run folders (refusal, --overwrite, --resume, pruning by run), self-describing checkpoints, and train/eval CLI
errors that are one line naming their key (exit 2, no traceback)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import deeplab_fast.training.checkpoint as ckpt
from deeplab_fast.cli import main
from deeplab_fast.models.weights import load_model, read_model_info
from deeplab_fast.training import ConfigError, Trainer, config_from_dict
from deeplab_fast.training.logging import read_scalars


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(out: Path, model: dict | None = None, **train) -> dict:
    return {
        "model": model or {"factory": "tiny_model:tiny_seg", "num_classes": 3},
        "data": {
            "dataset": "synthetic",
            "crop_size": 32,
            "eval_crop_size": 40,
            "num_workers": 0,
            "synthetic": {"train_length": 8, "val_length": 2, "size": 40},
        },
        "train": {
            "iterations": 2,
            "batch_size": 4,
            "lr": 0.05,
            "output_dir": str(out),
            "log_every": 1,
            "checkpoint_every": 1,
            "tensorboard": False,
            **train,
        },
    }


# a real DeepLabV3+, as small as it goes: checkpoints of it describe their model
TINY_DEEPLAB = {
    "backbone": "mobilenet_v2",
    "num_classes": 3,
    "output_stride": 16,
    "options": {"width_mult": 0.25, "aspp_channels": 8, "low_level_channels": 8, "mobilenet_last_conv": False},
}


def _trainer(out: Path, resume=None, overwrite=False, model=None, **train) -> Trainer:
    return Trainer(config_from_dict(_cfg(out, model, **train)), resume=resume, overwrite=overwrite, progress=False)


def test_fresh_run_refuses_a_folder_with_another_run_and_overwrite_replaces_it(tmp_path):
    run = tmp_path / "run"
    _trainer(run, iterations=3, keep_last=5).train()
    (run / "notes.txt").write_text("mine")  # not a run file: never touched
    with pytest.raises(ConfigError, match=r"holds another run .*--resume .*--overwrite"):
        _trainer(run)
    assert [p.name for p in ckpt.list_checkpoints(run)][-1] == "ckpt_0000003.safetensors"  # nothing deleted
    with pytest.raises(ConfigError, match="exclude each other"):
        _trainer(run, resume="auto", overwrite=True)
    fresh = _trainer(run, overwrite=True)
    fresh.train()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt_0000001.safetensors", "ckpt_0000002.safetensors"]
    steps = [s for s, n, _ in read_scalars(run / "scalars.csv") if n == "train/loss"]
    assert steps == [1, 2]  # the old run's rows are gone, not appended to
    assert (run / "notes.txt").read_text() == "mine"


def test_pruning_touches_only_checkpoints_of_the_current_run(tmp_path):
    # Regression: pruning kept the highest step numbers of any run, so an older run's ckpt_0000100 in the
    # folder made a new run delete its own fresh checkpoints.
    old = tmp_path / "old"
    _trainer(old, iterations=1).train()
    run = tmp_path / "run"
    trainer = _trainer(run, keep_last=1)
    for suffix in (".safetensors", ".state.safetensors"):  # another run's files appear in the folder
        shutil.copy(old / f"ckpt_0000001{suffix}", run / f"ckpt_0000100{suffix}")
    trainer.train()
    names = [p.name for p in ckpt.list_checkpoints(run)]
    assert names == ["ckpt_0000002.safetensors", "ckpt_0000100.safetensors"]
    ids = {ckpt.read_metadata(run / n)["run_id"] for n in names}
    assert len(ids) == 2 and trainer.run_id in ids


def test_resume_keeps_the_run_id_and_auto_resume_without_checkpoints_is_refused(tmp_path):
    run = tmp_path / "run"
    first = _trainer(run, iterations=3, keep_last=1)
    first.train(2)
    resumed = _trainer(run, resume="auto", iterations=3, keep_last=1)
    assert resumed.run_id == first.run_id and resumed.step == 2
    resumed.train()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt_0000003.safetensors"]  # pruned its own
    for p in ckpt.list_checkpoints(run) + [run / "best.safetensors"]:
        p.unlink()
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        _trainer(run, resume="auto")


def test_checkpoints_describe_their_model_and_load_model_rebuilds_it(tmp_path):
    run = tmp_path / "run"
    trainer = _trainer(run, model=TINY_DEEPLAB)
    trainer.train()
    x = torch.randn(1, 3, 40, 40)
    trainer.model.eval()
    for name in ("best.safetensors", "ckpt_0000002.safetensors"):
        info = read_model_info(run / name)
        assert info["format_version"] == 1 and info["model"]["backbone"] == "mobilenet_v2"
        assert info["model"]["width_mult"] == 0.25 and info["model"]["aspp_dropout"] == 0.1  # defaults too
        assert info["class_names"] == ["background", "ellipse1", "rectangle2"]
        assert info["mean"] == pytest.approx([0.485, 0.456, 0.406]) and info["std"][0] == pytest.approx(0.229)
    model = load_model(run / "ckpt_0000002.safetensors")
    assert not model.training
    torch.testing.assert_close(model(x), trainer.model(x), rtol=0, atol=0)
    # a custom factory's checkpoint names the factory; load_model does not import code named in a file
    tiny = tmp_path / "tiny"
    _trainer(tiny, iterations=1).train()
    assert read_model_info(tiny / "ckpt_0000001.safetensors")["factory"] == "tiny_model:tiny_seg"
    with pytest.raises(ValueError, match="tiny_model:tiny_seg"):
        load_model(tiny / "ckpt_0000001.safetensors")


def test_demo_config_trains_from_any_folder_and_predict_needs_no_architecture_flags(tmp_path, monkeypatch, capsys):
    # Regression: the synthetic demo's model (mobilenet_v2, 3 classes, options) could not be used with predict.
    monkeypatch.chdir(tmp_path)
    sets = ["train.iterations=1", "train.batch_size=2", "data.synthetic.train_length=2", "data.synthetic.val_length=1"]
    sets += ["model.options={width_mult: 0.25, aspp_channels: 8, low_level_channels: 8, mobilenet_last_conv: false}"]
    argv = ["train", "--config", "synthetic_demo", "--output-dir", "run", "--no-progress"]
    argv += [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert main(argv) == 2  # the folder now holds a run
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    from PIL import Image

    Image.new("RGB", (40, 36), (200, 30, 30)).save(tmp_path / "red.png")
    rc = main(["predict", "red.png", "--weights", "run/best.safetensors", "--out", "pred", "--quiet", "--no-optimize"])
    assert rc == 0, capsys.readouterr().err
    with Image.open(tmp_path / "pred" / "red.png") as lab:
        assert lab.mode == "P" and lab.size == (40, 36) and int(np.asarray(lab).max()) < 3
    rc = main(["eval", "--config", "synthetic_demo", "--weights", "run/best.safetensors", "--set",
               "data.synthetic.val_length=1"])  # fmt: skip
    assert rc == 0 and "mIoU" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.options={colour: 1}", "model.options"),
        ("train.lr=.nan", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.warmup_factor=-0.5", "train.warmup_factor"),
        ("train.weight_decay=-0.0001", "train.weight_decay"),
        ("train.eval_every=-1", "train.eval_every"),
        ("train.poly_power=0", "train.poly_power"),
        ("data.std=[0.2, 0, 0.2]", "data.std"),
        ("data.scale_range=[small, 2]", "data.scale_range"),
        ("eval.scales=[1.0, big]", "eval.scales"),
        ("train.device=tpu", "train.device"),
    ],
)
def test_train_cli_config_errors_are_one_line_naming_the_key(tmp_path, capsys, override, key):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path / "run", TINY_DEEPLAB)))
    assert main(["train", "--config", str(path), "--set", override, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deeplab-fast train: error:") and key in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_train_cli_output_dir_that_is_a_file_and_cuda_without_gpu(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path / "run")))
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.output_dir" in err and "file" in err
    assert main(["train", "--config", str(path), "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "--config", str(path), "--set", "train.device=cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "train.device" in err and "CUDA is not available" in err


def test_eval_of_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    rc = main(["eval", "--config", "synthetic_demo", "--weights", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "best.safetensors" in err and "Traceback" not in err


def test_poly_power_and_eval_every_no_longer_fail_late():
    # Regression: poly_power=0 raised ZeroDivisionError at the last step; eval_every=-1 evaluated every step.
    with pytest.raises(ConfigError, match="train.poly_power"):
        config_from_dict({"train": {"poly_power": 0.0}})
    with pytest.raises(ConfigError, match="train.eval_every"):
        config_from_dict({"train": {"eval_every": -1}})
    with pytest.raises(ConfigError, match=r"data.std must be three numbers > 0"):
        config_from_dict({"data": {"std": [0.2, 0.0, 0.2]}})
