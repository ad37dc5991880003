"""Hard-negative mining: oversample the normal patches the current model scores highest.

Camelyon16's winning method (Wang et al. 2016, "Deep Learning for Identifying Metastatic Breast
Cancer", arXiv:1606.05718) retrained its patch classifier with extra normal patches taken from the
false-positive regions of a first model; without them, tissue that looks like tumour (lymphoid
aggregates, hyperchromatic benign epithelium, crushed cells) is seen too rarely to be learned,
because almost every normal patch is easy. Here the mining is done during one run:

1. the first ``hard_negative_after`` epochs draw plain three-step samples;
2. before each later epoch, every normal (label 0) patch of the train split is scored with the
   current weights, and the ``hard_negative_top`` highest-scoring share of them is the *hard pool*;
3. in that epoch, each normal draw is replaced, with probability ``hard_negatives``, by a
   uniform draw from the pool. Tumour draws are untouched, so labels stay balanced as the
   three-step rule makes them.

The pool is a function of the weights at the start of the epoch, and the replacement of the
epoch's random generator: a resumed run draws what an uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.training.sampler import Samples

__all__ = ["HardPool", "hard_pool", "mix_hard_negatives", "train_negatives"]


@dataclass(frozen=True)
class HardPool:
    """The hard normal patches of an epoch: slide index, patch index within it, and their F(I) in [0, 1]."""

    slide: np.ndarray
    patch: np.ndarray
    prob: np.ndarray

    def __len__(self) -> int:
        return int(self.slide.size)


def train_negatives(labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return (slide index, patch index) of every normal (label 0) patch, slide by slide in order."""
    slide = [np.full(int((~np.asarray(lab, dtype=bool)).sum()), s, dtype=np.int64) for s, lab in enumerate(labels)]
    patch = [np.flatnonzero(~np.asarray(lab, dtype=bool)).astype(np.int64) for lab in labels]
    if not slide:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(slide), np.concatenate(patch)


def hard_pool(slide: np.ndarray, patch: np.ndarray, prob: np.ndarray, top: float) -> HardPool:
    """Return the ``top`` share (in (0, 1]) of the scored normal patches with the highest F(I).

    At least one patch is kept; ties are broken by the given order (stable), so the pool is a
    function of the scores alone. The pool is returned highest F(I) first.

    Args:
        slide, patch: the scored normal patches (see :func:`train_negatives`).
        prob: their F(I) under the current weights, probabilities in [0, 1].
        top: the share of them that is hard, e.g. 0.1 for the highest-scoring tenth.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if not 0 < top <= 1:
        raise ValueError(f"the hard share must be in (0, 1], got {top}")
    if prob.size == 0:
        return HardPool(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    n = max(1, round(top * prob.size))
    order = np.argsort(-prob, kind="stable")[:n]
    return HardPool(np.asarray(slide)[order], np.asarray(patch)[order], prob[order])


def mix_hard_negatives(samples: Samples, pool: HardPool, share: float, rng: np.random.Generator) -> Samples:
    """Return ``samples`` with each normal draw replaced, with probability ``share``, by a uniform draw from ``pool``.

    Tumour draws and the labels are unchanged; an empty pool or ``share`` 0 changes nothing (and
    draws nothing from ``rng``). Deterministic for a given ``rng`` state.
    """
    if share <= 0 or len(pool) == 0:
        return samples
    normal = np.flatnonzero(samples.label == 0)
    chosen = normal[rng.random(normal.size) < share]
    which = rng.integers(0, len(pool), size=chosen.size)
    slide, patch = samples.slide.copy(), samples.patch.copy()
    slide[chosen] = pool.slide[which]
    patch[chosen] = pool.patch[which]
    return Samples(slide, patch, samples.label.copy())
