"""LIME over SLIC superpixels (Ribeiro et al. 2016, arXiv:1602.04938), as the source material sets it up.

Superpixels P_1..P_l of the patch I (scikit-image ``slic``: ``n_segments``, ``compactness``,
``sigma``) are the interpretable components. A binary vector x in {0, 1}^l gives the subimage
I[x] with every P_k where x_k = 0 filled with ``hide_color`` (RGB 0..255; ``None``: each
superpixel's mean colour, LIME's own default). On ``n_samples`` random vectors (the first one
all ones, the patch itself) the model gives y_i(I[x]); a weighted sparse linear surrogate (LIME's
ridge on the ``num_features`` most important superpixels) is fitted to them. Its weights (with
sign) rank the superpixels; ``extras["r2"]`` is the surrogate's R^2 on the samples (LIME's
``score``). The map paints each superpixel with its weight.

``lime.lime_image.LimeImageExplainer`` does the sampling and the fit. Its 0.2 release prints a
tqdm bar with no switch to turn it off, builds each sample with a Python loop over the
superpixels, and hands the model uint8 NHWC numpy batches that must be converted to float
tensors again batch by batch. ``_QuietLimeImageExplainer`` replaces only that step
(``data_labels``): the same random draws from LIME's own ``random_state``, no bar, and each batch
built in one ``torch.where`` straight into a reused float32 channels_last buffer (the layout
oneDNN runs fastest), from the patch and its filled copy converted once. LIME's distances,
kernel, feature selection and ridge fit are used as they are (a few ms at 1000 samples).
``batch_size`` samples per forward; may run in bf16.

Cost (bench/bench_explain.py): one forward per sample; the fixed costs are SLIC (~15 ms at 128 px,
~50 ms at 224 px) and LIME's distances and regressions (~25 ms at 1000 samples).
"""

from __future__ import annotations

import numpy as np
import torch
from lime.lime_image import LimeImageExplainer
from skimage.segmentation import slic

from core.explain.base import ExplainError, Explainer, check_number, check_positive_int

__all__ = ["LimeExplainer", "slic_segments"]

_FEATURE_SELECTION = ("auto", "highest_weights", "forward_selection", "lasso_path", "none")


class _QuietLimeImageExplainer(LimeImageExplainer):
    """LimeImageExplainer whose sampling step prints nothing and builds the samples as float tensors.

    ``classifier_fn`` here takes a (B, 3, H, W) float32 tensor in [0, 1] (channels_last) and
    returns a (B, 2) numpy array, instead of LIME's N x H x W x 3 uint8 numpy batch: the
    samples are made where the model needs them, without a uint8 round trip per batch.
    """

    def __init__(self, *args, device: torch.device | str = "cpu", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        """Return (samples, predictions) exactly as LIME 0.2 draws them: num_samples x l in {0, 1}, row 0 all ones."""
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        # The patch and its filled copy as H x W x 3 float in [0, 1], converted once (the same
        # arithmetic as base.batch_to_tensor, so the samples are bit-identical to uint8 / 255).
        shown = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device, torch.float32).div_(255.0)
        hidden_fill = torch.from_numpy(np.require(fudged_image, requirements=["C", "W"])).to(self.device, torch.float32).div_(255.0)
        labels_of_pixels = torch.from_numpy(np.require(segments, requirements=["C", "W"])).to(self.device, torch.long)
        on = torch.from_numpy(data.astype(bool)).to(self.device)
        height, width = segments.shape
        buffer = torch.empty((min(batch_size, num_samples), height, width, 3), device=self.device)
        labels = []
        for start in range(0, num_samples, batch_size):
            rows = on[start : start + batch_size]
            kept = rows[:, labels_of_pixels].unsqueeze(-1)  # (B, H, W, 1): pixels of the superpixels left on
            batch = torch.where(kept, shown, hidden_fill, out=buffer[: rows.shape[0]])
            labels.append(classifier_fn(batch.permute(0, 3, 1, 2)))  # NHWC memory = NCHW channels_last, no copy
        return data, np.concatenate(labels)


def slic_segments(image: np.ndarray, n_segments: int = 50, compactness: float = 10.0, sigma: float = 1.0) -> np.ndarray:
    """Return SLIC superpixel labels 0..l-1 (H x W int32) of an RGB uint8 image."""
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0, channel_axis=-1)
    # LIME indexes its sample vectors by label: make the labels exactly 0..l-1.
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int32)


class LimeExplainer(Explainer):
    """Signed weights of a sparse linear surrogate over SLIC superpixels, painted on the patch."""

    name = "lime"
    signed = True
    pair_output = True
    bytes_per_pixel = 600  # per sample in a batch, forward only (measured ~0.55 kB, VGG16 fp32)
    batch_params = ("batch_size", "n_samples")
    defaults = {
        "target": "cancer",
        "n_segments": 50,
        "compactness": 10.0,
        "sigma": 1.0,
        "n_samples": 1000,
        "hide_color": (128, 128, 128),
        "num_features": 10,
        "feature_selection": "auto",
        "kernel_width": 0.25,
        "top_k": 5,
        "batch_size": 25,
        "seed": 0,
        "precision": "fp32",
    }
    choices = {"target": ("cancer", "not_cancer"), "feature_selection": _FEATURE_SELECTION}

    def validate(self, p):
        check_positive_int(p, "n_segments", "n_samples", "num_features", "top_k", "batch_size")
        check_positive_int(p, "seed", minimum=0)
        check_number(p, "compactness", 1e-6, 1e6)
        check_number(p, "sigma", 0.0, 1e3)
        check_number(p, "kernel_width", 1e-6, 1e6)
        if p["n_samples"] < 2:
            raise ExplainError("n_samples must be at least 2")
        color = p["hide_color"]
        if color is not None:
            if isinstance(color, (int, np.integer)) and not isinstance(color, bool):
                color = (int(color),) * 3
            try:
                color = tuple(int(c) for c in color)
            except (TypeError, ValueError):
                raise ExplainError(f"hide_color must be None or an RGB triple 0..255, got {p['hide_color']!r}") from None
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ExplainError(f"hide_color must be None or an RGB triple 0..255, got {p['hide_color']!r}")
            p["hide_color"] = list(color)

    def _attribute(self, wrapper, model, image, x, p):
        segments = slic_segments(image, p["n_segments"], p["compactness"], p["sigma"])
        n = int(segments.max()) + 1
        device = x.device
        label = 1 if p["target"] == "cancer" else 0

        def classifier_fn(batch: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return wrapper(batch).float().cpu().numpy()

        explainer = _QuietLimeImageExplainer(
            kernel_width=p["kernel_width"], feature_selection=p["feature_selection"], random_state=p["seed"], device=device
        )
        explanation = explainer.explain_instance(
            image,
            classifier_fn,
            labels=(label,),
            hide_color=None if p["hide_color"] is None else tuple(p["hide_color"]),
            top_labels=None,
            num_features=p["num_features"],
            num_samples=p["n_samples"],  # LIME's own keyword
            batch_size=p["batch_size"],
            segmentation_fn=lambda _image: segments,
        )
        weights = np.zeros(n, dtype=np.float32)
        for index, weight in explanation.local_exp[label]:
            weights[int(index)] = weight
        order = np.argsort(-weights, kind="stable")
        top_positive = [int(i) for i in order if weights[i] > 0][: p["top_k"]]
        top_negative = [int(i) for i in order[::-1] if weights[i] < 0][: p["top_k"]]
        extras = {
            "segments": segments,
            "weights": weights,
            "n_superpixels": n,
            "top_positive": top_positive,
            "top_negative": top_negative,
            "r2": float(explanation.score),
            "intercept": float(explanation.intercept[label]),
            "local_pred": float(np.ravel(explanation.local_pred)[0]) if explanation.local_pred is not None else None,
        }
        return weights[segments], extras
