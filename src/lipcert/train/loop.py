"""The training loop: progress bar, per-epoch evaluation and log, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from lipcert.errors import BadInputError, CheckpointError, LipcertError, UnsupportedLayerError
from lipcert.layers.noise_injection import reseed_noise_layers
from lipcert.losses import lipschitz_penalty
from lipcert.losses.penalty import PENALTY_METHODS
from lipcert.progress import progress_bar
from lipcert.train import checkpointing
from lipcert.train.adversarial import Adversary, make_adversary
from lipcert.train.augment import ImageAugment, make_image_augment
from lipcert.train.batches import dataset_tensors, epoch_batches
from lipcert.train.distributed import (
    World,
    barrier,
    init_from_env,
    local_device,
    per_rank_batch,
    sum_over_ranks,
)
from lipcert.train.evaluation import evaluate
from lipcert.train.noise_augment import NoiseAugment, make_noise_augment
from lipcert.train.optim import (
    OptimizerFactory,
    ScheduleFactory,
    make_optimizer,
    make_schedule,
    set_optimizer_mode,
)
from lipcert.train.tensorboard import log_epoch, open_writer

LOG_FILE = "log.jsonl"


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (the same object that was passed in, on ``device``).
        history: one dict per epoch done (also the lines of ``out/log.jsonl``).
        out: the run folder, or None when nothing was written.
        model_file: the :func:`lipcert.models.save` checkpoint, or None for a model that was
            not built from a recipe (its weights are then only in the training state).
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None
    model_file: Path | None = None

    @property
    def epochs_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0


def resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """``None``: the model's device; ``"auto"``: CUDA if available; else the given device."""
    if device is None:
        first = next(model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise BadInputError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'.")
    return device


def check_arguments(
    epochs: int, eps: float, batch_size: int, penalty: float, penalty_method: str
) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise BadInputError(f"epochs must be a positive integer, got {epochs!r}.")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps >= 0):
        raise BadInputError(f"eps (the l2 radius to certify) must be finite and >= 0, got {eps!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not penalty >= 0:
        raise BadInputError(f"penalty must be >= 0, got {penalty!r}.")
    if penalty_method not in PENALTY_METHODS:
        raise BadInputError(
            f"unknown penalty method {penalty_method!r}; choose one of "
            f"{', '.join(PENALTY_METHODS)}."
        )


def check_model_fits(
    model: nn.Module, train_data: Dataset, test_data: Dataset, device: torch.device, certify: bool
) -> None:
    """Fail before training if the model cannot classify the data or cannot be certified."""
    train_x, train_y = dataset_tensors(train_data)
    test_x, test_y = dataset_tensors(test_data)
    if len(train_y) == 0 or len(test_y) == 0:
        raise BadInputError("training and test data must both hold at least one example.")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise BadInputError(
            f"training images have shape {tuple(train_x.shape[1:])} but test images "
            f"{tuple(test_x.shape[1:])}; use two splits of the same data set."
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(train_x[:2].to(device))
    except (RuntimeError, ValueError) as err:
        raise BadInputError(
            f"the model does not accept images of shape {tuple(train_x.shape[1:])} ({err}). "
            "Build it for the data set's channels and image size (e.g. lipcert.models.build("
            "name, in_channels=..., image_size=...))."
        ) from err
    finally:
        model.train(was_training)
    if logits.dim() != 2 or logits.shape[0] != len(train_x[:2]):
        raise BadInputError(
            f"the model must return logits of shape (batch, classes); for a batch of "
            f"{len(train_x[:2])} it returned {tuple(logits.shape)}."
        )
    top_label = int(max(train_y.max(), test_y.max()))
    if top_label >= logits.shape[1]:
        raise BadInputError(
            f"the data holds label {top_label} but the model has only {logits.shape[1]} "
            "outputs; build it with num_classes equal to the data set's number of classes."
        )
    if certify:
        try:
            evaluate(model, torch.utils.data.TensorDataset(test_x[:2], test_y[:2]), [0.0])
        except UnsupportedLayerError as err:
            raise UnsupportedLayerError(
                f"{err} Certified accuracy cannot be measured for this model; train it with "
                "certify=False (CLI: --no-certify) or use a supported architecture."
            ) from err


def _skip_certify_randomized(model: nn.Module) -> bool:
    """True (with a warning) for a model holding a NoiseInjection: a random map has no
    Lipschitz-margin certificate, so per-epoch certification is skipped."""
    from lipcert.attacks.common import is_randomized

    if not is_randomized(model):
        return False
    warnings.warn(
        "the model contains a NoiseInjection (a random map): per-epoch certified accuracy is "
        "skipped; certify the trained model with lipcert.certify.noise_injection_radii.",
        stacklevel=3,
    )
    return True


def build_optimizer(
    optimizer: str | torch.optim.Optimizer | OptimizerFactory,
    model: nn.Module,
    lr: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        return make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    return optimizer(model.parameters())


def compute_loss(
    loss: Callable[..., torch.Tensor],
    logits: torch.Tensor,
    target: torch.Tensor,
    model: nn.Module,
    inputs: torch.Tensor,
) -> torch.Tensor:
    """``loss(logits, target)``, plus the model's bound for losses with ``needs_bound``."""
    if getattr(loss, "needs_bound", False):
        return loss(logits, target, loss.bound(model, inputs[:1]))
    return loss(logits, target)


def read_log(out: Path, upto_epoch: int) -> list[dict[str, Any]]:
    path = out / LOG_FILE
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["epoch"] <= upto_epoch]


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    from lipcert.report import atomic_write_bytes

    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(out / LOG_FILE, text.encode())


def has_recipe(model: nn.Module) -> bool:
    from lipcert.models.registry import SPEC_ATTRIBUTE

    return hasattr(model, SPEC_ATTRIBUTE)


def resolve_eps(eps: float | None, loss: Any) -> float:
    """The radius training reports: ``eps``, else the loss's ``target_eps``, else 1.0;
    :class:`BadInputError` if both are given and differ."""
    target = getattr(loss, "target_eps", None)
    if eps is None:
        return 1.0 if target is None else float(target)
    if target is not None and float(eps) != float(target):
        raise BadInputError(f"eps={eps:g} differs from the eps={target:g} the loss was built for; "
                            "give one radius (build_loss(..., eps=...) sets both).")
    return eps


def describe_setting(value: Any) -> str:
    """A description of a training setting that is the same in every process: the name of a
    function or class (``repr`` of a function holds its memory address), a module's repr."""
    if isinstance(value, str | nn.Module):
        return value if isinstance(value, str) else repr(value)
    if isinstance(value, torch.optim.Optimizer):
        return type(value).__qualname__
    name = getattr(value, "__qualname__", None)
    if name is not None:
        return f"{getattr(value, '__module__', '')}.{name}"
    return repr(value)


def save_epoch(
    out: Path,
    record: dict[str, Any],
    history: list[dict[str, Any]],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    dataset_name: str | None,
    settings: dict[str, Any] | None = None,
) -> Path | None:
    """Write the log, the training state (with the run's ``settings``) and the model: a
    checkpoint for recipe models, the weights (a state_dict) for others."""
    write_log(out, history)
    checkpointing.save_state(
        out, epoch=record["epoch"], model=model, optimizer=optimizer, scheduler=scheduler,
        device=device, settings=settings,
    )
    if not has_recipe(model):  # a user's own model: its state_dict, for --factory
        from lipcert.models.factory import save_weights

        return save_weights(model, out / checkpointing.MODEL_FILE)
    from lipcert.models import save

    path = out / checkpointing.MODEL_FILE
    save(model, path, dataset=dataset_name, extra={"epoch": record["epoch"], "metrics": record})
    return path


def train(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset,
    loss: Callable[..., torch.Tensor],
    epochs: int,
    *,
    optimizer: str | torch.optim.Optimizer | OptimizerFactory = "adam",
    lr: float = 0.01,
    weight_decay: float = 0.0,
    schedule: str | ScheduleFactory = "triangular",
    seed: int = 0,
    batch_size: int = 128,
    eps: float | None = None,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    certify: bool = True,
    penalty: float = 0.0,
    penalty_method: str = "gram",
    stop_after: int | None = None,
    progress: bool = True,
    dataset_name: str | None = None,
    noise: str | None = None,
    adversarial: str | None = None,
    augment: str | None = None,
    tensorboard: bool = False,
    eval_every: int = 1,
) -> TrainResult:
    """Train ``model`` for ``epochs`` epochs and measure its certified accuracy every epoch.

    Args:
        model: any classifier returning (batch, classes) logits; recipe models
            (:func:`lipcert.models.build`) are also checkpointed with
            :func:`lipcert.models.save`.
        train_data, test_data: data sets of (image, label), e.g. ``lipcert.data.load(...)``.
        loss: ``loss(logits, target)``; losses from :mod:`lipcert.losses` that need the
            Lipschitz bound (LMT) or a schedule are driven through their protocol.
        epochs: total epochs (the learning-rate schedule spans all of them).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"schedulefree"`` (with the
            ``constant`` schedule), an optimizer over the model's parameters, or a function
            ``params -> optimizer``. Optimizers with ``train()`` / ``eval()`` methods
            (schedule-free) are switched to eval mode before each evaluation and checkpoint,
            so the model is evaluated, saved and returned with its averaged weights.
        schedule: ``"triangular"``, ``"cosine"``, ``"constant"`` or a function
            ``(optimizer, total_steps) -> scheduler``; stepped once per batch.
        seed: seeds torch's RNG at the start; the data order of epoch ``e`` is a shuffle
            seeded by ``seed + e``, so a resumed run repeats an uninterrupted one exactly.
        batch_size: the global batch; with N processes each takes ``batch_size / N``.
        eps: the l2 radius (images in [0, 1]) at which certified accuracy is reported;
            default: the radius the loss was built for (``loss.target_eps``, set by
            :func:`lipcert.losses.build_loss`), else 1.0. Giving one that differs from the
            loss's is an error (one source of truth for the radius).
        device: ``None`` (the model's), ``"auto"``, ``"cpu"``, ``"cuda"``...
        out: run folder for ``log.jsonl``, the training state and ``model.safetensors``;
            None writes nothing. Only rank 0 writes.
        resume: continue from the training state in ``out``.
        certify: measure certified accuracy and the Lipschitz bound (needs a model that
            :mod:`lipcert.bounds` supports; checked before training).
        penalty: weight of :func:`lipcert.losses.lipschitz_penalty` added to the loss.
        penalty_method: ``"gram"`` or ``"toeplitz"`` for the penalty's bound.
        stop_after: stop once this many epochs (counted from 1) are done, as if interrupted.
        progress: show a progress bar per epoch (rank 0 only; one line per epoch when
            standard error is not a terminal).
        dataset_name: recorded in the model checkpoint.
        noise: ``"LAW:SIGMA"`` (e.g. ``"gaussian:0.25"``) adds fresh noise of that law and
            standard deviation to every training sample at every step (on the device, seeded
            by ``seed``, epoch and step, so resume is exact): the training of base classifiers
            for randomized smoothing (:mod:`lipcert.train.noise_augment`). Evaluation is clean.
        adversarial: ``"pgd-linf:EPS"``, ``"pgd-l2:EPS"``, ``"mat-rand"`` or ``"mat-max"``:
            train on adversarial examples (:mod:`lipcert.train.adversarial`); with a
            :class:`lipcert.layers.NoiseInjection` in the model this is RAT. A model with
            NoiseInjection is random, so its per-epoch certification is skipped with a warning
            (certify it with :func:`lipcert.certify.noise_injection_radii`).
        augment: ``"crop"``, ``"crop:P"``, ``"flip"`` or ``"crop,flip"``: random crops after
            zero padding by P pixels (default 2) and left-right flips, fresh per sample and
            step, on the device (:mod:`lipcert.train.augment`); applied before the adversary
            and the noise.
        eval_every: evaluate on ``test_data`` (accuracy, and with ``certify`` the network
            bound and certified accuracy) every this many epochs and after the last one; the
            log's evaluation fields are None in between.
        tensorboard: also write each epoch's numbers for TensorBoard under
            ``out/tensorboard`` (``pip install tensorboard``; :mod:`lipcert.train.tensorboard`).

    Raises :class:`lipcert.LipcertError` before any training step for bad arguments, data the
    model cannot classify, a model that cannot be certified (with ``certify=True``), or
    ``resume=True`` without a training state in ``out``.
    """
    eps = resolve_eps(eps, loss)
    check_arguments(epochs, eps, batch_size, penalty, penalty_method)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise BadInputError(f"eval_every must be a positive integer, got {eval_every!r}.")
    make_noise_augment(noise, seed)  # a bad spec fails before any work
    make_adversary(adversarial, seed)
    make_image_augment(augment, seed)
    certify = certify and not _skip_certify_randomized(model)
    if resume and out is None:
        raise BadInputError("resume=True needs the run folder `out` to resume from.")
    if resume and checkpointing.saved_epoch(Path(out)) is None:
        raise CheckpointError(
            f"nothing to resume: {out} holds no {checkpointing.STATE_JSON}; run without "
            "--resume first."
        )
    device = resolve_device(device, model)
    world = init_from_env(device)
    device = local_device(device)
    rank_batch = per_rank_batch(batch_size, world)
    model.to(device)
    check_model_fits(model, train_data, test_data, device, certify)
    torch.manual_seed(seed)

    opt = build_optimizer(optimizer, model, lr, weight_decay)
    images, labels = dataset_tensors(train_data)
    steps_per_epoch = math.ceil((len(labels) // world.size) / rank_batch)
    scheduler = (
        make_schedule(schedule, opt, epochs * steps_per_epoch)
        if isinstance(schedule, str)
        else schedule(opt, epochs * steps_per_epoch)
    )
    out_path = Path(out) if out is not None else None
    settings = {  # compared on resume (checkpointing.check_settings)
        "model": getattr(model, "lipcert_spec", None) or {
            "class": type(model).__qualname__,
            "parameters": sum(p.numel() for p in model.parameters())},
        "loss": describe_setting(loss),
        "epochs": epochs, "optimizer": describe_setting(optimizer), "lr": lr,
        "weight_decay": weight_decay, "schedule": describe_setting(schedule), "seed": seed,
        "batch_size": batch_size, "eps": eps, "penalty": penalty,
        "penalty_method": penalty_method, "noise": noise,
        **({"adversarial": adversarial} if adversarial is not None else {}),
        **({"augment": augment} if augment is not None else {}),
    }
    start, history = 0, []
    if resume:
        checkpointing.check_settings(out_path, settings)
        start = checkpointing.load_state(
            out_path, model=model, optimizer=opt, scheduler=scheduler, device=device
        )
        history = read_log(out_path, start)
    net: nn.Module = DistributedDataParallel(model) if world.distributed else model
    result = TrainResult(model=model, history=history, out=out_path)
    if out_path is not None and world.is_main and start:
        result.model_file = out_path / checkpointing.MODEL_FILE
    writer = open_writer(out_path) if tensorboard and world.is_main else None
    last = epochs if stop_after is None else min(epochs, stop_after)
    for epoch in range(start, last):
        record = run_epoch(
            net, model, images, labels, loss, opt, scheduler, epoch=epoch, epochs=epochs,
            rank_batch=rank_batch, seed=seed, world=world, device=device, eps=eps,
            certify=certify, test_data=test_data, progress=progress,
            augment=make_noise_augment(noise, seed, world.rank),
            adversary=make_adversary(adversarial, seed, world.rank),
            image_augment=make_image_augment(augment, seed, world.rank),
            evaluate_epoch=(epoch + 1) % eval_every == 0 or epoch + 1 == last,
            penalty=(lambda x: penalty * lipschitz_penalty(model, x, penalty_method))
            if penalty > 0 else None,
        )
        result.history.append(record)
        if out_path is not None and world.is_main:
            result.model_file = save_epoch(
                out_path, record, result.history, model, opt, scheduler, device, dataset_name,
                settings,
            )
        if writer is not None:
            log_epoch(writer, record)
        barrier(world)
    if writer is not None:
        writer.close()
    return result


def run_epoch(
    net: nn.Module,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss: Callable[..., torch.Tensor],
    opt: torch.optim.Optimizer,
    scheduler: Any,
    *,
    epoch: int,
    epochs: int,
    rank_batch: int,
    seed: int,
    world: World,
    device: torch.device,
    eps: float,
    certify: bool,
    test_data: Dataset,
    progress: bool,
    penalty: Callable[[torch.Tensor], torch.Tensor] | None,
    augment: NoiseAugment | None = None,
    adversary: Adversary | None = None,
    image_augment: ImageAugment | None = None,
    evaluate_epoch: bool = True,
) -> dict[str, Any]:
    """One epoch of training followed (if ``evaluate_epoch``) by evaluation on ``test_data``;
    returns the log record (evaluation fields None when not evaluated)."""
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(epoch)
    started = time.perf_counter()
    dataset = torch.utils.data.TensorDataset(images, labels)
    batches = epoch_batches(dataset, batch_size=rank_batch, seed=seed, epoch=epoch, world=world)
    steps = math.ceil((len(labels) // world.size) / rank_batch)
    bar = progress_bar(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       enabled=progress and world.is_main)
    totals = torch.zeros(3, dtype=torch.float64)
    set_optimizer_mode(opt, training=True)
    net.train()
    for step, index in enumerate(batches):
        x, y = images[index].to(device), labels[index].to(device)
        if image_augment is not None:
            x = image_augment(x, epoch=epoch, step=step)
        reseed_noise_layers(model, seed, epoch, step, world.rank)  # exact resume with noise
        if adversary is not None:
            x = adversary(model, x, y, epoch=epoch, step=step)
        if augment is not None:
            x = augment(x, epoch=epoch, step=step)
        logits = net(x)
        value = compute_loss(loss, logits, y, model, x)
        if penalty is not None:
            value = value + penalty(x[:1])
        if not torch.isfinite(value):
            raise LipcertError(
                f"training diverged at epoch {epoch + 1}: the loss is {float(value)}. Lower the "
                "learning rate or check the model's initialization."
            )
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        scheduler.step()
        correct = (logits.detach().argmax(1) == y).sum()
        totals += torch.stack([value.detach().double().cpu() * len(y), correct.double().cpu(),
                               torch.tensor(float(len(y)), dtype=torch.float64)])
        bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.3f}",
                        refresh=False)
        bar.update()
    set_optimizer_mode(opt, training=False)  # evaluate and save the averaged weights
    totals = sum_over_ranks(totals.to(device), world).cpu()
    seconds = time.perf_counter() - started
    metrics = (evaluate(model, test_data, [eps], certify=certify) if evaluate_epoch else
               {"accuracy": None, "certified": None, "lipschitz": None})
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "loss": float(totals[0] / totals[2]),
        "train_accuracy": float(totals[1] / totals[2]),
        "test_accuracy": metrics["accuracy"],
        "eps": eps,
        "certified_accuracy": None if metrics["certified"] is None
        else metrics["certified"][f"{float(eps):g}"],
        "lipschitz_upper": metrics["lipschitz"],
        "lr": opt.param_groups[0]["lr"],
        "train_seconds": seconds,
        "noise": augment.spec if augment is not None else None,
        **({"adversarial": adversary.spec} if adversary is not None else {}),
        **({"augment": image_augment.spec} if image_augment is not None else {}),
    }
    postfix = {"loss": f"{record['loss']:.4f}"}
    if evaluate_epoch:
        postfix["test_acc"] = f"{record['test_accuracy']:.3f}"
    if evaluate_epoch and certify:
        postfix[f"cert@{eps:g}"] = f"{record['certified_accuracy']:.3f}"
        postfix["L"] = f"{record['lipschitz_upper']:.3g}"
    bar.set_postfix(postfix)
    bar.close()
    return record
