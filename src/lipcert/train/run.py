"""Run a :class:`TrainConfig`: build the data, model and loss it names, then :func:`train`."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from lipcert import data as datasets
from lipcert.errors import BadInputError
from lipcert.losses import build_loss
from lipcert.train.config import TrainConfig
from lipcert.train.loop import TrainResult, train


def build_model_for(config: TrainConfig) -> torch.nn.Module:
    """The recipe model of ``config``, sized for its data set, initialized from its seed."""
    meta = datasets.info(config.data)
    channels, height, width = meta.shape
    sizes = {"in_channels": channels, "image_size": height, "num_classes": meta.num_classes}
    sizes.update({k: v for k, v in (("width", config.width), ("depth", config.depth),
                                    ("noise", config.noise_layer)) if v is not None})
    if config.normalize:
        sizes["normalize"] = "channels"
    from lipcert.models import build

    torch.manual_seed(config.seed)
    return build(config.model, **sizes)


def train_from_config(
    config: TrainConfig, train_data: Dataset | None = None, test_data: Dataset | None = None,
    model: torch.nn.Module | None = None,
) -> TrainResult:
    """Everything ``lipcert train`` does, as one call; validates the config first.

    ``train_data``/``test_data`` replace the splits of ``config.data`` (e.g. subsets of it);
    the model is still sized from ``config.data``. ``model`` (e.g. from ``--factory``)
    replaces the recipe model; its weights are saved as ``model.safetensors`` (a state_dict,
    see :mod:`lipcert.models.factory`). With ``config.val_fraction`` the
    per-epoch evaluation runs on a validation part held out of ``train_data``, never on the
    test split.
    """
    config.validate()
    if train_data is None:
        train_data = datasets.load(config.data, "train", root=config.data_root)
    if config.val_fraction is not None:
        train_data, test_data = datasets.validation_split(train_data, config.val_fraction)
    elif test_data is None:
        test_data = datasets.load(config.data, "test", root=config.data_root)
    if model is None:
        model = build_model_for(config)
        if config.normalize:  # statistics of the images it trains on (never of the test split)
            from lipcert.models import fit_input_normalization

            fit_input_normalization(model, _images_of(train_data))
    elif config.normalize:
        raise BadInputError("normalize applies to recipe models; put the normalization inside "
                            "your factory's model (lipcert.bounds.Normalize).")
    loss = build_loss(
        config.loss, eps=config.eps, offset=config.offset, temperature=config.temperature,
        margin=config.margin, alpha=config.alpha, ramp_epochs=config.ramp_epochs,
    )
    return train(
        model, train_data, test_data, loss, config.epochs,
        optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
        schedule=config.schedule, seed=config.seed, batch_size=config.batch_size,
        eps=config.eps, device=config.device, out=config.out, resume=config.resume,
        certify=config.certify, penalty=config.penalty, penalty_method=config.penalty_method,
        stop_after=config.stop_after, progress=config.progress, dataset_name=config.data,
        noise=config.noise, adversarial=config.adversarial, augment=config.augment,
        tensorboard=config.tensorboard, eval_every=config.eval_every,
    )


def _images_of(dataset: Dataset) -> torch.Tensor:
    """All input images of ``dataset`` as one tensor (a TensorDataset's own, else stacked)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0]
    return torch.stack([dataset[i][0] for i in range(len(dataset))])
