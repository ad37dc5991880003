"""Three-step sampling of training patches (source material, "training data three step sampling").

For every example: (1) pick a label uniformly, (2) pick uniformly a slide that has at least one
patch with that label, (3) pick uniformly such a patch of that slide. Labels are balanced in
expectation however rare tumor patches are, and every slide weighs the same whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ThreeStepSampler", "Samples"]


@dataclass(frozen=True)
class Samples:
    """Drawn examples: slide index, patch index within that slide, and label (int), each (N,)."""

    slide: np.ndarray
    patch: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.slide.size)

    def __getitem__(self, key) -> Samples:
        return Samples(self.slide[key], self.patch[key], self.label[key])


class ThreeStepSampler:
    """Draw (slide, patch, label) triples by the three-step rule.

    Args:
        labels: one integer or boolean array per slide: the label of each of its patches.
        classes: the labels to draw from (default: every label present). A class with no
            patch in any slide cannot be drawn and raises ValueError.

    Example:
        >>> sampler = ThreeStepSampler([np.array([0, 0, 1]), np.array([0, 0])])
        >>> s = sampler.sample(4, np.random.default_rng(0))
    """

    def __init__(self, labels: Sequence[np.ndarray], classes: Sequence[int] | None = None) -> None:
        labels = [np.asarray(lab).astype(np.int64).ravel() for lab in labels]
        present = sorted({int(v) for lab in labels for v in np.unique(lab)})
        self.classes = tuple(int(c) for c in (classes if classes is not None else present))
        if not self.classes:
            raise ValueError("no patches to sample from")
        # For each class: the slides holding it, and for each such slide the indices of its patches.
        self._slides: dict[int, np.ndarray] = {}
        self._patches: dict[int, list[np.ndarray]] = {}
        for c in self.classes:
            slides, patches = [], []
            for s, lab in enumerate(labels):
                where = np.flatnonzero(lab == c)
                if where.size:
                    slides.append(s)
                    patches.append(where)
            if not slides:
                raise ValueError(f"no slide has a patch with label {c}")
            self._slides[c] = np.asarray(slides, dtype=np.int64)
            self._patches[c] = patches

    def slides_with(self, label: int) -> np.ndarray:
        """Return the indices of the slides that hold at least one patch with ``label``."""
        return self._slides[int(label)].copy()

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        """Return ``n`` examples drawn independently by the three-step rule.

        Deterministic for a given ``rng`` state.
        """
        n = int(n)
        # Step 1: a label, uniformly.
        label = np.asarray(self.classes, dtype=np.int64)[rng.integers(0, len(self.classes), size=n)]
        slide = np.empty(n, dtype=np.int64)
        patch = np.empty(n, dtype=np.int64)
        # A fixed number of draws per class, in class order, keeps the result a function of rng alone.
        for c in self.classes:
            rows = np.flatnonzero(label == c)
            if rows.size == 0:
                continue
            # Step 2: a slide holding that label, uniformly.
            which = rng.integers(0, self._slides[c].size, size=rows.size)
            slide[rows] = self._slides[c][which]
            # Step 3: one of that slide's patches with that label, uniformly.
            counts = np.array([p.size for p in self._patches[c]], dtype=np.int64)
            offsets = rng.integers(0, counts[which])
            patch[rows] = [self._patches[c][w][o] for w, o in zip(which, offsets)]
        return Samples(slide, patch, label)
