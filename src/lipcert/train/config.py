"""``TrainConfig``: every setting of a training run, from CLI flags or a TOML file."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lipcert.errors import BadInputError


@dataclass
class TrainConfig:
    """Settings of ``lipcert train``; field names are the TOML keys (dashes also accepted).

    Model: ``model`` (a recipe of :func:`lipcert.models.build`), ``width``/``depth``
    (recipe overrides, None keeps the recipe's), ``normalize`` (a per-channel mean/std
    normalization inside the model, fitted on the training images, so certificates stay in
    input units). Data: ``data`` (a :func:`lipcert.data.load`
    name), ``data_root`` (folder for local sets). Loss: ``loss`` (a name of
    :data:`lipcert.losses.LOSSES`), ``eps`` (target l2 radius, images in [0, 1]), and the
    loss knobs ``offset``, ``temperature``, ``margin``, ``alpha``, ``ramp_epochs``,
    ``penalty``/``penalty_method``. Optimization: ``epochs``, ``batch_size``, ``lr``,
    ``weight_decay``, ``optimizer``, ``schedule``, ``seed``. Run: ``device``, ``out``,
    ``resume``, ``certify``, ``stop_after``, ``progress``. Noise augmentation for randomized
    smoothing: ``noise`` (``"LAW:SIGMA"``, e.g. ``"gaussian:0.25"``; None for none).
    Randomized defenses: ``adversarial`` (``"pgd-linf:EPS"``, ``"pgd-l2:EPS"``, ``"mat-rand"``,
    ``"mat-max"``; :mod:`lipcert.train.adversarial`) and ``noise_layer`` (``"LAW:SIGMA"``: a
    :class:`lipcert.layers.NoiseInjection` where the recipe puts it, e.g. ``cnn-s``'s input;
    with ``adversarial`` this is RAT). Data augmentation: ``augment`` (``"crop,flip"``,
    :mod:`lipcert.train.augment`). Validation: ``val_fraction`` holds out that fraction of
    each class of the training split (:func:`lipcert.data.validation_split`) and evaluates on
    it every epoch instead of the test split. ``tensorboard``: also log each epoch for
    TensorBoard under ``out/tensorboard`` (needs the tensorboard package). ``eval_every``:
    evaluate (and certify) every K epochs and after the last.
    """

    model: str = "sll-m"
    data: str = "mnist-5k"
    data_root: str | None = None
    loss: str = "margin-ce"
    eps: float = 1.0
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "triangular"
    seed: int = 0
    width: int | None = None
    depth: int | None = None
    offset: float | None = None
    temperature: float = 0.25
    margin: float | None = None
    alpha: float = 0.98
    ramp_epochs: int = 0
    penalty: float = 0.0
    penalty_method: str = "gram"
    device: str = "auto"
    out: str = "runs/latest"
    resume: bool = False
    certify: bool = True
    stop_after: int | None = None
    progress: bool = True
    noise: str | None = None
    adversarial: str | None = None
    noise_layer: str | None = None
    augment: str | None = None
    val_fraction: float | None = None
    tensorboard: bool = False
    eval_every: int = 1
    normalize: bool = False

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read ``path`` (a flat table, or a ``[train]`` table); ``overrides`` win."""
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise BadInputError(f"cannot read the config file {path}: {err}") from err
        table = table.get("train", table)
        return cls.from_dict({**{k.replace("-", "_"): v for k, v in table.items()}, **overrides},
                             where=str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "the config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInputError(
                f"{where}: unknown setting(s) {', '.join(unknown)}; valid ones are "
                f"{', '.join(sorted(known))}."
            )
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise :class:`BadInputError` naming the first bad setting; checks names too."""
        from lipcert.data import info
        from lipcert.losses import LOSSES
        from lipcert.losses.penalty import PENALTY_METHODS
        from lipcert.models.registry import get_recipe
        from lipcert.train.optim import OPTIMIZERS, SCHEDULES

        get_recipe(self.model)
        info(self.data)
        choices = {"loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "penalty_method": PENALTY_METHODS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInputError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}."
                )
        optional = [n for n in ("width", "depth", "stop_after") if getattr(self, n) is not None]
        positive = ["epochs", "batch_size", "eval_every", *optional]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("eps", "lr", "weight_decay", "temperature", "penalty", "ramp_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value >= 0
            ):
                raise BadInputError(f"{name} must be a finite number >= 0, got {value!r}.")
        if self.noise is not None:
            from lipcert.train.noise_augment import make_noise_augment

            make_noise_augment(self.noise, self.seed)
        if self.augment is not None:
            from lipcert.train.augment import make_image_augment

            make_image_augment(self.augment, self.seed)
            if "flip" in self.augment and self.data in ("mnist", "mnist-5k", "digits"):
                raise BadInputError(f"augment flip mirrors digits into other shapes; use "
                                    f"'crop' alone for {self.data}.")
        if self.val_fraction is not None and (
                isinstance(self.val_fraction, bool)
                or not isinstance(self.val_fraction, int | float)
                or not 0 < self.val_fraction < 1):
            raise BadInputError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}.")
        if self.adversarial is not None:
            from lipcert.train.adversarial import make_adversary

            make_adversary(self.adversarial, self.seed)
        if self.noise_layer is not None:
            from lipcert.models.registry import default_args
            from lipcert.noise import parse_noise_spec

            parse_noise_spec(self.noise_layer)
            if "noise" not in default_args(self.model):
                raise BadInputError(
                    f"noise_layer needs a recipe with a noise slot (cnn-s); {self.model!r} has "
                    "none."
                )
        if self.lr == 0 or self.temperature == 0:
            raise BadInputError("lr and temperature must be > 0.")
