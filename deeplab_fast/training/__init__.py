"""Training and evaluation: Trainer, configuration, checkpoints, distributed helpers."""

from deeplab_fast.training.checkpoint import CheckpointError, load_model_state
from deeplab_fast.training.config import Config, ConfigError, config_from_dict, load_config
from deeplab_fast.training.distributed import CPUSyncBatchNorm, convert_sync_batchnorm, init_distributed
from deeplab_fast.training.evaluate import evaluate, predict_batch
from deeplab_fast.training.schedule import PolyLR
from deeplab_fast.training.trainer import Trainer

__all__ = [
    "Trainer",
    "Config",
    "ConfigError",
    "config_from_dict",
    "load_config",
    "CheckpointError",
    "load_model_state",
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm",
    "init_distributed",
    "evaluate",
    "predict_batch",
    "PolyLR",
]
