"""Samplers: a resumable DistributedSampler that yields (index, seed) pairs, and a non-padding eval shard."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample `index`'s augmentation in `epoch`: a pure function, so it survives workers and resumes."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + index) % (2**63 - 1)


class ResumableDistributedSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled by seed + epoch, rank r takes every world-th index) that yields
    (index, augmentation seed) pairs and can start part-way through an epoch (`set_position`), so a resumed run
    sees exactly the samples an uninterrupted one would. Works with num_replicas=1 for a single process."""

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, start: int) -> None:
        """Skip the first `start` samples (this rank's count) of the current epoch; reset by set_epoch."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"sampler position must be in [0, {self.num_samples}], got {start}")
        self.start = start

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start :]
        return iter([(i, augmentation_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler[int]):
    """Rank r of `world` takes indices r, r + world, ... in order, without padding (evaluation counts each sample
    exactly once; ranks may get one sample fewer)."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
