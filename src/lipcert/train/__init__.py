"""Certified training: :func:`train`, :class:`TrainConfig` and :func:`train_from_config`.

The loop shows a progress bar per epoch (loss, accuracy, certified accuracy at the target
radius, Lipschitz upper bound), writes a JSON-lines log and a checkpoint every epoch, resumes
bit-identically, and runs data-parallel under ``torchrun`` (gloo on CPU, NCCL on GPUs).
"""

from lipcert.train.config import TrainConfig
from lipcert.train.evaluation import evaluate
from lipcert.train.loop import TrainResult, train
from lipcert.train.run import build_model_for, train_from_config

__all__ = ["train", "TrainConfig", "TrainResult", "train_from_config", "build_model_for",
           "evaluate"]
