"""A torch Dataset over any data source (`source[i]` -> (RGB uint8 image, uint8 label)) and the DataLoader
used for training: validated pairs, the reference augmentations, normalisation by the model's mean/std
(pspcore.preprocess.normalize, the one place it is done), and a sampler that can resume mid-epoch."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pspcore.errors import InputError
from pspcore.preprocess import normalize
from pspnet.data.transforms import IGNORE, Compose


def check_pair(image: np.ndarray, label: np.ndarray, num_classes: int, where: str) -> None:
    """A clear InputError for a pair that cannot be trained or evaluated on."""
    if image.shape[:2] != label.shape:
        raise InputError(f"{where}: image is {image.shape[1]}x{image.shape[0]} but its label is "
                         f"{label.shape[1]}x{label.shape[0]} (width x height)")
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE)]
    if bad.size:
        raise InputError(f"{where}: label values {', '.join(map(str, bad[:5].tolist()))} are outside "
                         f"[0, {num_classes}) and not {IGNORE} (ignore)")


class SegmentationDataset(Dataset):
    """Item i -> (image float32 [3, H, W] normalised, label int64 [H, W]). With a transform, sample i of epoch
    e is augmented with rng (seed, e, i): identical on every run and in every worker, so resume is exact."""

    def __init__(self, source, num_classes: int, mean, std, transform: Compose | None = None, seed: int = 0):
        if len(source) == 0:
            raise InputError("empty dataset: no samples to train or evaluate on")
        self.source, self.num_classes = source, num_classes
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform, self.seed, self.epoch = transform, int(seed), 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The validated (image RGB, label) pair before augmentation and normalisation."""
        image, label = self.source[index]
        where = self.source.describe(index) if hasattr(self.source, "describe") else f"sample {index}"
        check_pair(image, label, self.num_classes, where)
        return image, label

    def __getitem__(self, index: int):
        image, label = self.load(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label = self.transform(image.astype(np.float32), label, rng)
        return (torch.from_numpy(normalize(image, self.mean, self.std)),
                torch.from_numpy(label.astype(np.int64)))


class ResumableSampler(Sampler):
    """DistributedSampler (shuffled by seed + epoch, sharded by rank) that can skip the first `start`
    indices of its epoch, so a run resumed mid-epoch sees exactly the batches it had not seen."""

    def __init__(self, dataset, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.inner = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return iter(list(self.inner)[self.start:])

    def __len__(self) -> int:
        return len(self.inner) - self.start


def _seed_worker(worker_id: int) -> None:
    # Augmentation draws from per-sample rngs; this only keeps any stray torch randomness reproducible.
    torch.manual_seed(torch.initial_seed() % 2**31 + worker_id)


def make_loader(dataset: SegmentationDataset, batch_size: int, *, shuffle: bool, workers: int = 2,
                seed: int = 0, rank: int = 0, world: int = 1, drop_last: bool = True) -> DataLoader:
    """A DataLoader with a ResumableSampler (`loader.sampler.set_epoch(epoch, start)` before each epoch)."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    sampler = ResumableSampler(dataset, shuffle=shuffle, seed=seed, rank=rank, world=world)
    if drop_last and len(sampler.inner) < batch_size:
        raise InputError(f"dataset has {len(dataset)} samples ({len(sampler.inner)} per process), fewer than "
                         f"one batch of {batch_size}; lower --batch")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, worker_init_fn=_seed_worker, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())
