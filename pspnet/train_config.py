"""psp-train's configuration: one dataclass, loadable from YAML/JSON, validated with messages a user can act on."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pspcore.errors import InputError, first_line
from pspcore.files import require_file
from pspnet.data.datasets import DATASETS

CONTEXT_SCENES = "context-scenes"


def option(default, help: str, *, kind: str | None = None, flag: str | None = None, short: str | None = None):
    """A TrainConfig field and the psp-train option made from it (mmdeploy's BaseBackendParam idea: the default
    is written once, here). `kind` when the default does not say: int, float, str, count (an int >= 1), size
    (N or HxW), range (LOW,HIGH), ints (comma list), folder, device, dataset (a name or a list file), flag (an
    on-switch without --no-); `flag` when the option's name is not the field's; `short` a one-letter alias."""
    return field(default=default, metadata={"help": help, "kind": kind, "flag": flag, "short": short})


@dataclass(frozen=True)
class TrainConfig:
    """Defaults: the reference recipe (poly 0.9, head x10, aux 0.4, wd 1e-4) with a PSPNet-18 on the built-in
    context-scenes set at 129 px, sized for a few minutes on a laptop CPU."""

    output: str = option("runs/pspnet18", "Run folder: last.pth (resumable), model.pth (final weights + model "
                         "info), metrics.jsonl.", kind="folder", short="-o")
    arch: str = option("pspnet18", "pspnet18/34/50/101/152, or pspnet18-tiny (half width).")
    dataset: str = option(CONTEXT_SCENES, "'context-scenes' (built in, generated), voc, ade20k, cityscapes (read as "
                          "downloaded, from --data-root) or a list file of 'image label' lines.", kind="dataset")
    data_root: str | None = option(None, "voc: the VOC2012 folder; ade20k: ADEChallengeData2016; cityscapes: the "
                                   "folder with leftImg8bit/ and gtFine/. List files: paths are relative to this "
                                   "(default: the list file's folder).", kind="folder")
    split: str | None = option(None, "Split of a named dataset [default: the reference's: train_aug for voc (train "
                               "without SegmentationClassAug/), train otherwise].", kind="str")
    classes: int | None = option(None, "Number of classes (list files; default: the label set's count).", kind="int")
    label_set: str = option("", "Class names/palette for list files: ade20k, cityscapes, voc, ...")
    scene_size: tuple[int, int] = option((129, 129), "context-scenes image size, N or HxW; 2:1 or wider makes "
                                         "panoramas whose scene type shows only at one end (see "
                                         "experiments/ppm_ablation.py).", kind="size")
    scenes: int = option(2000, "context-scenes training images per epoch.")
    seed: int = option(0, "Random seed (data, augmentation, initialisation).")
    crop: tuple[int, int] = option((129, 129), "Training crop, N or HxW.", kind="size")
    scale: tuple[float, float] | None = option(None, "Random scale range LOW,HIGH [default: 0.5,2.0 (reference); "
                                               "0.75,1.25 on context-scenes, whose scenes must stay whole to show "
                                               "their context].", kind="range")
    rotate: float = option(10.0, "Random rotation range +-degrees (0 = off).")
    blur: bool = option(True, "Random Gaussian blur.")
    flip: bool = option(True, "Random horizontal flip.")
    batch: int = option(8, "Batch size, total over all processes.")
    epochs: int | None = option(None, "Train this many epochs (overrides --iters).", kind="int")
    iterations: int | None = option(500, "Train this many iterations (the default takes ~10 min on a 2-core CPU).",
                                    flag="iters")
    lr: float = option(0.01, "Base lr (poly schedule; ppm/cls/aux heads at --head-lr-mult x).")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(1e-4, "SGD weight decay.")
    head_lr_mult: float = option(10.0, "The heads (ppm, cls, aux) learn this many times faster (reference: 10).")
    power: float = option(0.9, "Poly schedule power: lr = base x (1 - iter/max)^power.")
    aux_weight: float = option(0.4, "Weight of the auxiliary loss.")
    ppm: bool = option(True, "--no-ppm: the FCN baseline (same backbone, no pyramid).")
    bins: tuple[int, ...] = option((1, 2, 3, 6), "Pyramid bins.", kind="ints")
    amp: bool = option(True, "Mixed precision (CUDA only).")
    workers: int = option(2, "DataLoader worker processes.")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice).", kind="count")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.", kind="device")
    save_every: int = option(0, "Checkpoint every N iterations (0 = every epoch); always at the end and at the "
                             "time limit.")
    time_limit_min: float | None = option(None, "Stop (with a checkpoint) after this many minutes.", kind="float")
    resume: bool = option(False, "Continue from OUTPUT/last.pth (same settings; may extend --iters).", kind="flag")

    def __post_init__(self):
        for name in ("crop", "scene_size", "scale", "bins"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and name != "bins":
                value = (value, value)
            object.__setattr__(self, name, tuple(value) if value is not None else None)
        self.validate()

    @property
    def scale_range(self) -> tuple[float, float]:
        """The random-scale range in effect. context-scenes defaults to a narrow one: at 2x a crop shows a
        quarter of the scene, often without the far-away cue that decides the object's class."""
        if self.scale is not None:
            return self.scale
        return (0.75, 1.25) if self.dataset == CONTEXT_SCENES else (0.5, 2.0)

    def validate(self) -> None:
        checks = [
            (self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
            (self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}"),
            (not Path(self.output).exists() or Path(self.output).is_dir(),
             f"--output {self.output} is a file; give a run folder"),
            (self.epochs is None or self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.epochs is not None or (self.iterations or 0) >= 1,
             f"iterations must be at least 1, got {self.iterations}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.aux_weight >= 0, f"aux_weight must be >= 0, got {self.aux_weight}"),
            (len(self.crop) == 2 and min(self.crop) >= 17, f"crop must be at least 17x17, got {self.crop}"),
            (len(self.scene_size) == 2 and min(self.scene_size) >= 17,
             f"scene_size must be at least 17x17, got {self.scene_size}"),
            (self.scale is None or (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1]),
             f"scale must be LOW,HIGH with 0 < LOW <= HIGH, got {self.scale}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}"),
            (self.time_limit_min is None or self.time_limit_min > 0,
             f"time_limit_min must be positive, got {self.time_limit_min}"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
            (self.dataset == CONTEXT_SCENES or self.dataset in DATASETS or self.classes or self.label_set,
             f"dataset {self.dataset!r} is a list file: give --classes or --label-set"),
            (self.dataset not in DATASETS or self.data_root,
             f"dataset {self.dataset!r} needs --data-root, the folder it was unpacked to"),
            (self.split is None or self.dataset in DATASETS,
             f"split applies to the named datasets ({', '.join(DATASETS)}), not to {self.dataset!r}"),
            (not self.label_set or self.dataset not in DATASETS,
             f"dataset {self.dataset!r} brings its own class names and palette: drop --label-set"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as stored in checkpoints


# What a resumed run must share with the run it continues (the rest -- length, workers, time limit -- may change).
RESUME_FIXED = ("arch", "dataset", "data_root", "split", "classes", "label_set", "scene_size", "scenes", "seed",
                "crop", "scale", "rotate", "blur", "flip", "batch", "lr", "momentum", "weight_decay", "head_lr_mult",
                "power", "aux_weight", "ppm", "bins")


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def read_config_file(path: str | os.PathLike) -> dict:
    """A YAML or JSON mapping of TrainConfig fields (dashes or underscores); unknown keys are an error."""
    p = require_file(path, "config file")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json and yaml raise their own error types
        kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
        raise InputError(f"{p}: not valid {kind}: {first_line(exc)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping of option: value, found {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(config_keys()))
    if unknown:
        raise InputError(f"{p}: unknown config key(s) {', '.join(unknown)}; known: {', '.join(config_keys())}")
    return data


def make_config(values: dict) -> TrainConfig:
    """TrainConfig from a dict, with one-line errors for wrong types instead of a TypeError traceback."""
    unknown = sorted(set(values) - set(config_keys()))
    if unknown:
        raise InputError(f"unknown config key(s) {', '.join(unknown)}")
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid training config: {exc}") from None


def resume_mismatch(stored: dict, config: TrainConfig) -> list[str]:
    """The settings a resumed run would change (each `key: stored -> now`)."""
    now = config.to_dict()
    return [f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in RESUME_FIXED if stored.get(k) != now[k]]

