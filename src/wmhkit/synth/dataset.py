"""PyTorch datasets that synthesise training samples on the fly.

Sample ``i`` of epoch ``e`` is ``generate_sample(seed, 'train', index=e * len + i)``: it depends on
(seed, epoch, index) only, never on the worker that made it, so a training run is reproducible with any
``num_workers``. Use :func:`make_loader` (or pass :func:`worker_init_fn`) so that each worker runs torch
on one thread: the generator is written for one core per worker.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wmhkit.synth import generate_sample


def worker_init_fn(worker_id: int) -> None:
    """One torch thread per worker (several threads per worker only fight over the cores)."""
    torch.set_num_threads(1)


class SynthDataset(Dataset):
    """Synthetic FLAIR/T1 volumes with WMH labels on a training grid.

    Parameters
    ----------
    length : samples per epoch
    seed : base seed
    shape : training grid (X, Y, Z) voxels, RAS, isotropic ``spacing_mm``; the default
        112 x 144 x 112 at 1.5 mm (168 x 216 x 168 mm) holds a whole brain
    spacing_mm : voxel size of the training grid
    skull_prob : share of samples that keep skull/scalp (the rest are skull-stripped)
    modalities : which images to stack as channels ('flair', 't1')
    normalise : divide each channel by its 99.5th percentile inside the brain mask

    Each item is a dict of tensors: ``image`` float32 (C, X, Y, Z), ``wmh`` uint8 (1, X, Y, Z),
    ``brainmask`` uint8 (1, X, Y, Z), ``tissue`` uint8 (X, Y, Z), ``age`` float32 () (the atrophy/"age"
    regression target in [0, 1]), ``lesion_ml`` float32 (), ``index`` int64 ().
    """

    def __init__(
        self,
        length: int = 1000,
        seed: int = 0,
        shape: tuple[int, int, int] = (112, 144, 112),
        spacing_mm: float = 1.5,
        skull_prob: float = 0.3,
        modalities: tuple[str, ...] = ("flair", "t1"),
        normalise: bool = True,
    ):
        if length < 1:
            raise ValueError("length must be >= 1")
        bad = set(modalities) - {"flair", "t1"}
        if bad or not modalities:
            raise ValueError(f"modalities must be drawn from ('flair', 't1'), got {modalities}")
        self.length = int(length)
        self.seed = int(seed)
        self.shape = tuple(int(s) for s in shape)
        self.spacing_mm = float(spacing_mm)
        self.skull_prob = float(skull_prob)
        self.modalities = tuple(modalities)
        self.normalise = bool(normalise)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new samples for a new epoch (call before iterating the loader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        index = self.epoch * self.length + int(i)
        # The skull flag is drawn from its own stream so that it does not shift the sample's draws.
        skull = bool(np.random.default_rng([self.seed, index, 1]).random() < self.skull_prob)
        s = generate_sample(
            self.seed, "train", skull, index=index, work_spacing_mm=self.spacing_mm, train_shape=self.shape
        )
        channels = []
        for name in self.modalities:
            img = getattr(s, name)
            if self.normalise:
                inside = img[s.brainmask > 0]
                scale = float(np.percentile(inside, 99.5)) if inside.size else float(img.max() or 1.0)
                img = img / max(scale, 1e-6)
            channels.append(img.astype(np.float32, copy=False))
        return {
            "image": torch.from_numpy(np.stack(channels)),
            "wmh": torch.from_numpy(s.wmh[None]),
            "brainmask": torch.from_numpy(s.brainmask[None]),
            "tissue": torch.from_numpy(np.ascontiguousarray(s.tissue)),
            "age": torch.tensor(s.meta["age"], dtype=torch.float32),
            "lesion_ml": torch.tensor(s.meta["lesion_volume_ml"], dtype=torch.float32),
            "index": torch.tensor(index, dtype=torch.int64),
        }


def make_loader(dataset: SynthDataset, batch_size: int = 1, num_workers: int = 2, **kwargs) -> DataLoader:
    """A DataLoader generating in ``num_workers`` processes, one torch thread each."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        **kwargs,
    )
