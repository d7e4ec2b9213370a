"""Readers for the public datasets PSPNet is published on, in the folder layout their downloads unpack to:
Pascal VOC2012 (+ SBD 'train_aug'), ADE20K (ADEChallengeData2016) and Cityscapes (leftImg8bit + gtFine).

`open_dataset(name, root, split)[i]` -> (image RGB uint8 HxWx3, label uint8 HxW, 255 = ignore), the same
contract as a list file's source, with each dataset's raw label values mapped to the training ids the
reference code (hszhao/semseg, mmsegmentation) trains and evaluates on."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pspcore.errors import InputError, notice_once
from pspnet.data.listfile import ListFileSource
from pspnet.data.samples import Sample, SampleSource, check_files, lookup_table
from pspnet.labels import LABEL_SETS, LabelSet


class DatasetSplit(SampleSource):
    """One split of a dataset on disk; item i -> (image RGB uint8 HxWx3, label uint8 HxW, 255 = ignore)."""

    def __init__(self, name: str, split: str, root: Path, label_set: LabelSet, samples: list[Sample]):
        super().__init__(samples)
        self.name, self.split, self.root, self.label_set = name, split, root, label_set


# ---- Pascal VOC2012 --------------------------------------------------------------------------------------

VOC_AUG_SPLIT = "train_aug"  # VOC train + SBD, without VOC val: the 10582 images the reference trains on


def read_ids(list_path: Path) -> list[str]:
    """Image ids of a VOC list file. Takes the stem of each line's first field, so the DeepLab-style
    'train_aug.txt' ('/JPEGImages/ID.jpg /SegmentationClassAug/ID.png') reads as well as plain ids."""
    return [Path(line.split()[0]).stem for line in list_path.read_text().splitlines() if line.strip()]


def voc_splits(root: Path) -> tuple[str, ...]:
    names = {p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt")}
    if (root / "SegmentationClassAug").is_dir():
        names.add(VOC_AUG_SPLIT)
    return tuple(sorted(names))


def voc_aug_ids(root: Path) -> list[str]:
    """'train_aug' ids: its list file when the download has one, else every SegmentationClassAug label
    that is not in VOC val (SBD's labels cover val too, and val must stay unseen)."""
    list_path = root / "ImageSets" / "Segmentation" / f"{VOC_AUG_SPLIT}.txt"
    if list_path.is_file():
        return read_ids(list_path)
    val_path = root / "ImageSets" / "Segmentation" / "val.txt"
    val = set(read_ids(val_path)) if val_path.is_file() else set()
    return sorted(p.stem for p in (root / "SegmentationClassAug").glob("*.png") if p.stem not in val)


def voc_samples(root: Path, split: str) -> list[Sample]:
    if split == VOC_AUG_SPLIT:
        ids, label_dir = voc_aug_ids(root), root / "SegmentationClassAug"
    else:
        ids, label_dir = read_ids(root / "ImageSets" / "Segmentation" / f"{split}.txt"), root / "SegmentationClass"
    # Palette PNGs (and SBD's grey PNGs) already hold the training ids: 0..20, 255 on object borders.
    return [Sample(root / "JPEGImages" / f"{i}.jpg", label_dir / f"{i}.png") for i in ids]


# ---- ADE20K (SceneParsing, ADEChallengeData2016) ---------------------------------------------------------

ADE20K_SPLIT_DIRS = {"train": "training", "val": "validation"}
# 0 is 'other' (unlabelled) -> ignore; class k -> k - 1 (mmseg's reduce_zero_label, semseg's lists).
ADE20K_REMAP = lookup_table({k: k - 1 for k in range(1, 151)})


def ade20k_splits(root: Path) -> tuple[str, ...]:
    return tuple(ADE20K_SPLIT_DIRS)


def ade20k_samples(root: Path, split: str) -> list[Sample]:
    folder = ADE20K_SPLIT_DIRS[split]
    return [Sample(image, root / "annotations" / folder / f"{image.stem}.png", ADE20K_REMAP)
            for image in sorted((root / "images" / folder).glob("*.jpg"))]


# ---- Cityscapes (leftImg8bit + gtFine) -------------------------------------------------------------------

# cityscapesScripts labels.py: the label id of each of the 19 evaluated classes, in trainId order.
CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_REMAP = lookup_table({label_id: train_id for train_id, label_id in enumerate(CITYSCAPES_EVAL_IDS)})
_CITYSCAPES_IMAGE = "_leftImg8bit.png"


def cityscapes_splits(root: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in (root / "leftImg8bit").iterdir()
                        if p.is_dir() and (root / "gtFine" / p.name).is_dir()))


def cityscapes_label(image: Path, label_dir: Path) -> Sample:
    """Prefer the labelTrainIds PNG (written by createTrainIdLabelImgs, already 0..18/255); else map the
    labelIds PNG that ships with gtFine through the official table."""
    prefix = image.name[:-len(_CITYSCAPES_IMAGE)]
    train_ids = label_dir / f"{prefix}_gtFine_labelTrainIds.png"
    if train_ids.is_file():
        return Sample(image, train_ids)
    return Sample(image, label_dir / f"{prefix}_gtFine_labelIds.png", CITYSCAPES_REMAP)


def cityscapes_samples(root: Path, split: str) -> list[Sample]:
    images = sorted((root / "leftImg8bit" / split).glob(f"*/*{_CITYSCAPES_IMAGE}"))
    return [cityscapes_label(image, root / "gtFine" / split / image.parent.name) for image in images]


# ---- the registry ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's layout and the reference settings for it (semseg's config/<dataset>/*.yaml)."""

    name: str
    title: str  # for messages: "not a(n) {title} folder"
    label_set: LabelSet
    markers: tuple[str, ...]  # folders a ROOT must contain
    splits: Callable[[Path], tuple[str, ...]]  # the splits present under ROOT
    samples: Callable[[Path, str], list[Sample]]  # the layout reader
    train_splits: tuple[str, ...]  # what the reference trains on, then what stands in when it is absent
    val_split: str
    crop_size: int  # the reference training and test crop (8n + 1)
    base_size: int  # evaluation: each image is resized so its long side is base_size x scale
    split_hints: dict[str, str] = field(default_factory=dict)  # why a usual split may be absent


DATASETS: dict[str, DatasetSpec] = {
    "voc": DatasetSpec("voc", "Pascal VOC2012", LABEL_SETS["voc"],
                       ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"),
                       voc_splits, voc_samples, (VOC_AUG_SPLIT, "train"), "val", 473, 512,
                       {VOC_AUG_SPLIT: "it needs the SBD-augmented labels in ROOT/SegmentationClassAug/"}),
    "ade20k": DatasetSpec("ade20k", "ADE20K (ADEChallengeData2016)", LABEL_SETS["ade20k"],
                          ("images", "annotations"), ade20k_splits, ade20k_samples, ("train",), "val", 473, 512),
    "cityscapes": DatasetSpec("cityscapes", "Cityscapes", LABEL_SETS["cityscapes"], ("leftImg8bit", "gtFine"),
                              cityscapes_splits, cityscapes_samples, ("train",), "val", 713, 2048),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


# ---- opening, with errors that say what to fix ------------------------------------------------------------

def has_layout(spec: DatasetSpec, folder: Path) -> bool:
    return all((folder / marker).is_dir() for marker in spec.markers)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def likely_root(spec: DatasetSpec, root: Path) -> Path | None:
    """The folder the user probably meant: ROOT's parent (ROOT = VOC2012/JPEGImages) or a folder one or two
    levels down (ROOT = VOCdevkit, or the folder holding it)."""
    children = _subfolders(root)
    nearby = [root.parent, *children, *(grandchild for child in children for grandchild in _subfolders(child))]
    return next((folder for folder in nearby if has_layout(spec, folder)), None)


def _a(title: str) -> str:
    return f"{'an' if title[0] in 'AEIOU' else 'a'} {title}"


def check_root(spec: DatasetSpec, root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such directory (expected the {spec.title} folder)")
    if has_layout(spec, root):
        return root
    expected = ", ".join(f"{m}/" for m in spec.markers[:-1]) + f" and {spec.markers[-1]}/"
    hint = ""
    if (meant := likely_root(spec, root)) is not None:
        hint = f"; did you mean {meant}?"
    elif (other := next((s for s in DATASETS.values() if has_layout(s, root)), None)) is not None:
        hint = f"; it looks like {_a(other.title)} folder (dataset '{other.name}')"
    raise InputError(f"{root}: not {_a(spec.title)} folder: expected {expected} in it{hint}")


def default_train_split(name: str, root: str | os.PathLike) -> str:
    """The split the reference trains on, or the first stand-in present (VOC without SBD: 'train', said once)."""
    spec = get_spec(name)
    available = spec.splits(check_root(spec, root))
    split = next((s for s in spec.train_splits if s in available), spec.train_splits[0])
    if split != spec.train_splits[0]:
        reason = spec.split_hints.get(spec.train_splits[0], "it is not there")
        notice_once(f"train-split:{name}:{root}", f"training on {spec.title} split '{split}': the reference "
                    f"split '{spec.train_splits[0]}' is absent ({reason})")
    return split


def open_dataset(name: str, root: str | os.PathLike, split: str) -> DatasetSplit:
    """Split `split` of dataset `name` ('voc', 'ade20k', 'cityscapes') unpacked at `root`; every image and
    label is checked to exist."""
    spec = get_spec(name)
    root = check_root(spec, root)
    available = spec.splits(root)
    if split not in available:
        hint = f" ({spec.split_hints[split]})" if split in spec.split_hints else ""
        raise InputError(f"{root}: {spec.title} has no split {split!r}{hint}; available: "
                         f"{', '.join(available) or 'none'}")
    samples = spec.samples(root, split)
    if not samples:
        raise InputError(f"{root}: split {split!r} of {spec.title} is empty (no images found)")
    check_files(samples)
    return DatasetSplit(name, split, root, spec.label_set, samples)


def open_source(dataset: str, root: str | os.PathLike | None, split: str) -> SampleSource:
    """What a `--dataset X --data-root ROOT` option pair names: a named dataset's split, or else a list file
    (`dataset` is its path and `root` what its paths are relative to, split unused)."""
    if dataset in DATASETS:
        if not root:
            raise InputError(f"dataset {dataset!r} needs --data-root, the folder it was unpacked to")
        return open_dataset(dataset, root, split)
    return ListFileSource(dataset, root)
