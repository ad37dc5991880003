"""Training: the runs in the runs folders, their metrics curves and the command that reproduces each."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from app import context
from app.figures import training_figures
from core.paths import REPO_ROOT
from core.training.demo import DEMO_SHIPPED_RUN

st.title("Training")
st.markdown(
    "Runs of `python -m core train`: the recipe of the source material (three-step sampling, flips and colour "
    "perturbation, binary cross-entropy, RMSprop with rho = momentum = 0.9; the learning rate halves after 3 epochs "
    "without a better validation loss; training stops after 5 epochs without a better validation AUC and keeps the best)."
)

folders = [REPO_ROOT / "runs", context.data_dir() / "runs"]
runs = sorted({p.parent for folder in folders if folder.is_dir() for p in folder.glob("*/metrics.csv")})
if (DEMO_SHIPPED_RUN / "metrics.csv").is_file():  # the demo model's own run, shipped beside it: first
    runs.insert(0, DEMO_SHIPPED_RUN)
if not runs:
    st.info("No training runs yet. Start one with `python -m core train --preset demo` (the demo model) or "
            "`python -m core train --cohort cohort.csv --arch vgg16 --out runs/NAME`.")
    st.stop()


def _run_name(path: Path) -> str:
    if path == DEMO_SHIPPED_RUN:
        return "demo model's training run (shipped with models/demo-tiny.pt; synthetic data)"
    return f"{path.name}  ({path.parent})"


run = st.selectbox("Run", runs, format_func=_run_name)
run = Path(run)
try:
    metrics = pd.read_csv(run / "metrics.csv")
except (OSError, pd.errors.ParserError) as exc:
    st.error(f"{run / 'metrics.csv'} cannot be read: {exc}")
    st.stop()
summary = {}
if (run / "summary.json").exists():
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        st.warning(f"summary.json cannot be read: {exc}")

if summary.get("demo"):
    st.caption("Demo run: the tiny network on the synthetic demo cohort (generated slides, not real tissue; not for diagnosis).")
evaluation = {}
if (run / "evaluation.json").exists():
    try:
        evaluation = json.loads((run / "evaluation.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        st.warning(f"evaluation.json cannot be read: {exc}")
cols = st.columns(4)
cols[0].metric("Epochs", len(metrics))
cols[1].metric("Best validation AUC", f"{metrics['val_auc'].max():.3f}" if len(metrics) else "n/a")
test_auc = summary.get("test_slide_auc")
cols[2].metric("Test slide AUC", "n/a" if test_auc is None else f"{test_auc:.3f}")
cols[3].metric("Training time", f"{metrics['seconds'].sum():.0f} s" if "seconds" in metrics else "n/a")


def held_out_cohorts(evaluation: dict) -> str:
    """Name the demo cohorts (seeds) an evaluation.json's held-out slides come from ('' when it does not say)."""
    seeds = (evaluation.get("cohort") or {}).get("seeds")
    if not seeds:
        return ""
    return f" of the demo cohorts of seeds {', '.join(str(s) for s in seeds)}" if len(seeds) > 1 else f" of the demo cohort of seed {seeds[0]}"


if evaluation:
    st.markdown(
        f"**Held-out evaluation** ({evaluation.get('slides')} slides of the val and test splits{held_out_cohorts(evaluation)}, "
        f"{evaluation.get('tumor_slides')} with {evaluation.get('tumors')} tumors; {evaluation.get('patches')} patches)"
    )
    held = st.columns(3)
    for col, key, name in zip(held, ("slide_auc", "patch_auc", "froc_score"), ("Slide AUC", "Patch AUC", "FROC score")):
        value = evaluation.get(key)
        col.metric(name, "n/a" if value is None else f"{value:.3f}")

loss, auc, rate = training_figures(
    metrics["epoch"].tolist(), metrics["train_loss"].tolist(), metrics["val_loss"].tolist(), metrics["val_auc"].tolist(), metrics["lr"].tolist()
)
left, middle, right = st.columns(3)
left.plotly_chart(loss, width="stretch")
middle.plotly_chart(auc, width="stretch")
right.plotly_chart(rate, width="stretch")

command = summary.get("command")
if command:
    st.markdown("**Reproduce this run**")
    st.code(command, language="bash")
with st.expander("metrics.csv"):
    st.dataframe(metrics, hide_index=True, width="stretch")
if summary:
    with st.expander("summary.json"):
        st.json(summary)
if evaluation:
    with st.expander("evaluation.json"):
        st.json(evaluation)
