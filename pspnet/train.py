"""Training with the reference recipe on one CPU/GPU, or on many processes under torchrun (DDP; gloo on CPU,
NCCL with SyncBatchNorm on GPUs). Checkpoints are atomic and hold everything a resume needs (model,
optimizer, epoch, iteration, RNG), so a killed run loses nothing beyond its last checkpoint."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from pspcore.errors import CheckpointError, InputError, PSPError
from pspcore.model_info import ModelInfo
from pspnet.checkpoint import read_checkpoint, save_checkpoint
from pspnet.data.context_scenes import ContextScenes
from pspnet.data.dataset import SegmentationDataset, make_loader
from pspnet.data.datasets import DATASETS, default_train_split, open_dataset
from pspnet.data.listfile import ListFileSource
from pspnet.data.transforms import IGNORE, AugmentConfig, train_transform
from pspnet.factory import create_model
from pspnet.labels import LabelSet, get_label_set, label_set_for
from pspnet.pspnet import PSPNet, PSPNetLoss
from pspnet.train_config import CONTEXT_SCENES, TrainConfig, resume_mismatch

HEAD_MODULES = ("ppm", "cls", "aux")
LAST, FINAL, METRICS = "last.pth", "model.pth", "metrics.jsonl"


@dataclass
class TrainResult:
    checkpoint: Path  # weights + ModelInfo, for psp-eval / psp-export
    iteration: int
    max_iterations: int
    epoch: int
    seconds: float  # wall time of this invocation's training loop
    images_per_s: float
    loss: float
    stopped: str  # "done" or "time limit"
    main: bool = True  # the process that reports (rank 0 under torchrun)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(config: TrainConfig) -> DistEnv:
    """One process, or the process group torchrun describes in its environment (RANK, WORLD_SIZE, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise InputError("--device cuda requested but torch sees no CUDA GPU")
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        index = local if world > 1 or ":" not in config.device else int(config.device.split(":")[1])
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    if config.batch % world:
        raise InputError(f"batch {config.batch} does not divide over {world} processes")
    return DistEnv(rank, world, local, device)


def build_source(config: TrainConfig):
    """(training data source, LabelSet) for the configured dataset. A named dataset brings its own labels."""
    if config.dataset == CONTEXT_SCENES:
        return ContextScenes("train", config.scenes, config.scene_size, config.seed), get_label_set(CONTEXT_SCENES)
    if config.dataset in DATASETS:
        split = config.split or default_train_split(config.dataset, config.data_root)
        source = open_dataset(config.dataset, config.data_root, split)
        labels, what = source.label_set, f"dataset {config.dataset!r}"
    else:
        source = ListFileSource(config.dataset, config.data_root)
        if not config.label_set:
            return source, label_set_for(config.classes)
        labels, what = get_label_set(config.label_set), f"label set {config.label_set!r}"
    if config.classes and config.classes != labels.num_classes:
        raise InputError(f"--classes {config.classes} disagrees with {what} "
                         f"({labels.num_classes} classes)")
    return source, labels


def model_info(config: TrainConfig, labels: LabelSet) -> ModelInfo:
    return ModelInfo(arch=config.arch, num_classes=labels.num_classes, class_names=labels.class_names,
                     palette=labels.palette, input_size=tuple(config.crop), dataset=labels.name,
                     extra={"ppm": config.ppm, "trained_with": "psp-train"})


def param_groups(model: PSPNet, config: TrainConfig) -> list[dict]:
    """Backbone at lr, the heads (ppm, cls, aux) at lr x head_lr_mult; `mult` lets the schedule scale both."""
    head, body = [], []
    for name, p in model.named_parameters():
        (head if name.split(".")[0] in HEAD_MODULES else body).append(p)
    return [{"params": body, "lr": config.lr, "mult": 1.0},
            {"params": head, "lr": config.lr * config.head_lr_mult, "mult": config.head_lr_mult}]


def poly_lr(base: float, iteration: int, max_iterations: int, power: float) -> float:
    return base * (1 - iteration / max_iterations) ** power


def set_lr(optimizer, config: TrainConfig, iteration: int, max_iterations: int) -> float:
    lr = poly_lr(config.lr, iteration, max_iterations, config.power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["mult"]
    return lr


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def remove_stale_partials(out: Path) -> None:
    """Temporary files a killed run left beside its checkpoints (atomic_output never renamed them)."""
    for name in (LAST, FINAL):
        for stale in out.glob(f".{name}.*.partial"):
            stale.unlink(missing_ok=True)


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from, so the log matches the weights."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("iteration", 0) <= iteration]
    if len(kept) != len(lines):
        path.write_text("".join(ln + "\n" for ln in kept))


def load_resume(path: Path, config: TrainConfig, model: PSPNet, optimizer, scaler) -> dict:
    """Restore model, optimizer, scaler from `path`; returns the checkpoint (epoch, iteration, rng, ...)."""
    obj = read_checkpoint(path)
    if "iteration" not in obj or "optimizer" not in obj:
        raise CheckpointError(f"{path}: not a psp-train checkpoint (no optimizer/iteration state to resume)")
    changed = resume_mismatch(obj.get("train_config", {}), config)
    if changed:
        raise InputError(f"cannot resume {path} with different settings ({'; '.join(changed)}); "
                         "use the original options or a new --out")
    model.load_state_dict(obj["state_dict"])
    optimizer.load_state_dict(obj["optimizer"])
    if scaler is not None and obj.get("scaler"):
        scaler.load_state_dict(obj["scaler"])
    return obj


def compute_loss(criterion, outputs, target: torch.Tensor) -> torch.Tensor:
    # A crop can be all padding (255): cross-entropy would be 0/0. Keep the graph (DDP needs every grad).
    if not bool((target != IGNORE).any()):
        main = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        return main.sum() * 0.0
    return criterion(outputs, target)


class Trainer:
    """One training run: model, data and optimizer built from a TrainConfig; `run()` trains until the
    iteration budget or the time limit, writing checkpoints and the metrics log along the way."""

    def __init__(self, config: TrainConfig, env: DistEnv):
        self.config, self.env = config, env
        self.out = Path(config.output)
        source, self.labels = build_source(config)
        self.info = model_info(config, self.labels)
        augment = AugmentConfig(tuple(config.crop), config.scale_range, config.rotate, config.blur,
                                config.flip)
        self.dataset = SegmentationDataset(source, self.labels.num_classes, self.info.mean, self.info.std,
                                           train_transform(augment, self.info.mean), seed=config.seed)
        self.loader = make_loader(self.dataset, config.batch // env.world, shuffle=True, workers=config.workers,
                                  seed=config.seed, rank=env.rank, world=env.world)
        self.loader.generator = torch.Generator()
        self.iters_per_epoch = len(self.loader)
        self.max_iterations = (config.epochs * self.iters_per_epoch if config.epochs else config.iterations)
        torch.manual_seed(config.seed)
        model = create_model(config.arch, self.labels.num_classes, bins=config.bins, use_ppm=config.ppm)
        self.model = model.to(env.device)
        self.optimizer = torch.optim.SGD(param_groups(self.model, config), lr=config.lr,
                                         momentum=config.momentum, weight_decay=config.weight_decay)
        self.amp = config.amp and env.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.criterion = PSPNetLoss(config.aux_weight, IGNORE)
        self.iteration, self.prior_seconds = 0, 0.0

    def wrap_distributed(self) -> torch.nn.Module:
        if self.env.world == 1:
            return self.model
        model = self.model
        if self.env.device.type == "cuda":  # SyncBatchNorm has no CPU kernel; on gloo each process keeps its BN
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.env.device.index] if self.env.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def resume(self) -> None:
        path = self.out / LAST
        if not path.exists():
            raise InputError(f"--resume: no checkpoint to resume in {self.out} (expected {path})")
        obj = load_resume(path, self.config, self.model, self.optimizer, self.scaler)
        self.iteration, self.prior_seconds = int(obj["iteration"]), float(obj.get("train_seconds", 0.0))
        restore_rng(obj["rng"], self.env.device)
        if self.env.rank:  # only rank 0's generator is stored; give the others their own stream again
            torch.manual_seed(self.config.seed * 1000 + self.env.rank * 7919 + self.iteration)
        if self.env.main:
            truncate_metrics(self.out / METRICS, self.iteration)

    def save(self, name: str, seconds: float, with_state: bool = True) -> Path:
        state = {}
        if with_state:
            state = {"epoch": self.iteration // self.iters_per_epoch, "iteration": self.iteration,
                     "max_iterations": self.max_iterations, "optimizer": self.optimizer.state_dict(),
                     "rng": rng_state(self.env.device), "train_config": self.config.to_dict(),
                     "train_seconds": self.prior_seconds + seconds,
                     "scaler": self.scaler.state_dict() if self.scaler else {}}
        info = self.info.with_(extra={**self.info.extra, "iterations": self.iteration})
        return save_checkpoint(self.out / name, self.model, info, **state)

    def log(self, record: dict) -> None:
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def step(self, net, images: torch.Tensor, target: torch.Tensor) -> float:
        images = images.to(self.env.device, non_blocking=True)
        target = target.to(self.env.device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with autocast:
            loss = compute_loss(self.criterion, net(images), target)
        if not torch.isfinite(loss):
            raise PSPError(f"training diverged: loss is {loss.item()} at iteration {self.iteration}; "
                           "lower --lr or check the labels")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def run(self) -> TrainResult:
        cfg, env = self.config, self.env
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if env.main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.out)
        if cfg.resume:
            self.resume()
        net = self.wrap_distributed()
        net.train()
        start, start_iteration = time.perf_counter(), self.iteration
        limit = cfg.time_limit_min * 60 if cfg.time_limit_min else math.inf
        save_every = cfg.save_every or self.iters_per_epoch
        bar = tqdm(total=self.max_iterations, initial=self.iteration, unit="it", disable=not env.main,
                   desc=f"train {cfg.arch}{'' if cfg.ppm else ' (no ppm)'}", dynamic_ncols=True)
        try:
            stopped, loss = self.loop(net, bar, start, limit, save_every)
        finally:
            bar.close()  # before any error message, so it gets a line of its own
        seconds = time.perf_counter() - start
        done = self.iteration - start_iteration
        final = self.out / FINAL
        if env.main:
            self.save(FINAL, seconds, with_state=False)
        if env.world > 1:
            dist.barrier()
        return TrainResult(final, self.iteration, self.max_iterations, self.iteration // self.iters_per_epoch,
                           seconds, done * cfg.batch / seconds if seconds > 0 else 0.0, loss, stopped, env.main)

    def loop(self, net, bar, start: float, limit: float, save_every: int) -> tuple[str, float]:
        """Iterations until the budget or the time limit; returns (why it stopped, last loss)."""
        cfg, start_iteration = self.config, self.iteration
        stopped, loss_sum, loss_n, loss = "done", 0.0, 0, float("nan")
        while self.iteration < self.max_iterations and stopped == "done":
            epoch, offset = divmod(self.iteration, self.iters_per_epoch)
            self.dataset.set_epoch(epoch)
            self.loader.sampler.set_epoch(epoch, offset * self.loader.batch_size)
            self.loader.generator.manual_seed(cfg.seed * 100003 + epoch)
            for images, target in self.loader:
                lr = set_lr(self.optimizer, cfg, self.iteration, self.max_iterations)
                loss = self.step(net, images, target)
                self.iteration += 1
                loss_sum, loss_n = loss_sum + loss, loss_n + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
                out_of_time = self.stop_now(time.perf_counter() - start > limit)
                epoch_end = self.iteration % self.iters_per_epoch == 0
                if epoch_end or out_of_time or self.iteration == self.max_iterations:
                    self.log_epoch(loss_sum / max(loss_n, 1), lr, time.perf_counter() - start,
                                   self.iteration - start_iteration, partial=not epoch_end)
                    loss_sum, loss_n = 0.0, 0
                if self.iteration % save_every == 0 or out_of_time or self.iteration == self.max_iterations:
                    self.checkpoint(time.perf_counter() - start)
                if out_of_time:
                    stopped = "time limit"
                if out_of_time or self.iteration >= self.max_iterations:
                    break
        return stopped, loss

    def stop_now(self, local: bool) -> bool:
        """The time limit, agreed by all processes (rank clocks differ; all must stop at the same step)."""
        if self.env.world == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def checkpoint(self, seconds: float) -> None:
        if self.env.main:
            self.save(LAST, seconds)
        if self.env.world > 1:
            dist.barrier()

    def log_epoch(self, loss: float, lr: float, seconds: float, steps: int, partial: bool) -> None:
        if not self.env.main:
            return
        self.log({"epoch": math.ceil(self.iteration / self.iters_per_epoch), "iteration": self.iteration,
                  "loss": round(loss, 5), "lr": lr, "seconds": round(self.prior_seconds + seconds, 2),
                  "images_per_s": round(steps * self.config.batch / seconds, 2) if seconds > 0 else None,
                  **({"partial": True} if partial else {})})


def worker_error_message(exc: Exception) -> str | None:
    """The user's one-line message inside an exception a DataLoader worker re-raised (it carries the
    worker's whole traceback as its text); None when it is not one of ours."""
    text = str(exc)
    if "DataLoader worker" not in text:
        return None
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last


def train(config: TrainConfig) -> TrainResult:
    """Train as configured (inside torchrun: one process of the group). Errors are PSPErrors with one line."""
    env = setup_distributed(config)
    try:
        return Trainer(config, env).run()
    except PSPError as exc:
        message = worker_error_message(exc)
        if message:
            raise type(exc)(message) from None
        raise
    finally:
        if env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

