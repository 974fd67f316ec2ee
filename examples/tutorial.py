# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: read a run's answer, plot it, test a metric of your own
#
# This notebook is kept as a [jupytext](https://jupytext.readthedocs.io) script (`# %%` cells), so
# its diffs read like code. Open it as a notebook with `jupytext --to notebook examples/tutorial.py`
# (or Jupyter with the jupytext extension), or run it as a script: `python examples/tutorial.py`.
# The test suite executes it on a small run it trains (`tests/test_tutorial.py`).
#
# You need a trained and analysed run: `make run` (or `dcsbm run --config configs/quick.json`)
# makes one in `results/<experiment_id>/`.

# %% tags=["parameters"]
# The run to read: $DCSBM_RUN, else the newest analysed run under results/.
import os
from pathlib import Path

RUN = os.environ.get("DCSBM_RUN")
if RUN is None:
    analysed = sorted(Path("results").glob("*/analysis/index.json"), key=lambda p: p.stat().st_mtime)
    if not analysed:
        raise SystemExit("no analysed run under results/: run `make run` first, or set DCSBM_RUN=results/<experiment_id>")
    RUN = str(analysed[-1].parents[1])
print("run:", RUN)

# %% [markdown]
# ## 1. Load the run and read its answer
#
# `load_run` opens one run folder (from any working directory). `run.analysis()` is its default
# analysis; `headline` is the answer in plain words, the first box of `report.html`.

# %%
from dcsbm_transformer import load_run

run = load_run(RUN)
print(run.graph)  # the graph and every rule
print("analyses:", [a["name"] for a in run.analyses])
analysis = run.analysis()
print("\n".join(analysis.headline))

# %% [markdown]
# ## 2. AUROC by lookback, with its interval
#
# `horizon_frame()` is `horizon.json` as a tidy table: one row per (metric array, r, lookback j),
# computed on the exploratory events. Lookback j counts the tokens still to be generated before
# the deadline (j = 0 emits the deadline token itself). Any array can be plotted; here the
# registered primary, with its 95% DeLong interval (logit scale) and the 0.75 horizon threshold.

# %%
import matplotlib.pyplot as plt

table = analysis.horizon_frame()
primary = table[table.role == "primary"]
key = primary.key.iloc[0]  # e.g. "qkt.layer_0.head_0.grassmannian_distance"
print(key)

figure, axis = plt.subplots(figsize=(6, 3.5))
for r, rows in primary.groupby("r"):
    rows = rows.sort_values("j")
    axis.plot(rows.j, rows.auroc, marker="o", label=f"r = {r}")
    axis.fill_between(rows.j, rows.ci_low, rows.ci_high, alpha=0.2)
axis.axhline(0.5, color="grey", lw=0.8)
axis.axhline(0.75, color="grey", lw=0.8, ls="--")
axis.set_xlabel("lookback j (tokens before the deadline)")
axis.set_ylabel("stratified AUROC [95% CI]")
axis.set_title(key, fontsize=9)
axis.legend()
plt.show()

# %% [markdown]
# The same table answers other questions with ordinary pandas: the five arrays furthest from 0.5
# at lookback 1, say.

# %%
at_1 = table[(table.j == 1) & (table.role == "exploratory")].dropna(subset=["auroc"])
strongest = at_1.assign(distance=(at_1.auroc - 0.5).abs()).nlargest(5, "distance")
print(strongest[["key", "r", "auroc", "ci_low", "ci_high", "p_adj"]].to_string(index=False))

# %% [markdown]
# ## 3. Test a metric of your own
#
# A metric is any number per event and lookback. Here: *how far the QKᵀ subspace has moved since
# the jumper*, the Grassmannian distances of consecutive passes accumulated from pass 1 up to the
# pass at lookback j. `token_metrics` arrays are `[events, lookbacks]` in lookback order (column j
# = lookback j, NaN where j ≥ the event's r), so "from pass 1 to lookback j" is a cumulative sum
# from the last column down to column j.

# %%
import numpy as np

row = primary.iloc[0]
step = analysis.token_metrics[f"{row['target']}.layer_{row['layer']}.head_{row['head']}.grassmannian_distance"]  # [events, lookbacks]
exists = np.arange(step.shape[1])[None, :] < analysis.events["r"].to_numpy()[:, None]  # lookback j exists when j < r
moved = np.nancumsum(step[:, ::-1], axis=1)[:, ::-1]  # column j: the sum over columns j..r-1 = passes 1..r-j
moved[~exists] = np.nan
print(moved.shape)

# %% [markdown]
# `separation` is the whole test the report applies to every metric: the jumper-stratified AUROC
# at every lookback with its DeLong CI, the within-jumper permutation p with the max over
# lookbacks, and the horizons, per r. Use the **exploratory** events only: the held-out ones belong
# to the registered test and must not be looked at.

# %%
from dcsbm_transformer.analysis.stats.statistics import holm, separation

events = analysis.events
explore = ~events["held_out"].to_numpy()
mine = separation(
    moved[explore],
    events["violated"].to_numpy()[explore],
    events["jumper"].to_numpy()[explore],
    events["r"].to_numpy()[explore],
    permutations=999,
    rng=np.random.default_rng(0),
    min_events=3,
)
for r, result in mine.items():
    if result.status == "insufficient":
        print(f"r = {r}: insufficient ({result.n_violations} violations, {result.n_successes} successes)")
        continue
    j = result.best_j
    print(
        f"r = {r}: best lookback {j}, AUROC {result.auroc[j]:.3f} [{result.ci_low[j]:.3f}, {result.ci_high[j]:.3f}], "
        f"{result.direction}, permutation p = {result.p_value:.4f} "
        f"({result.n_violations} violations vs {result.n_successes} successes)"
    )

# %% [markdown]
# That p is for one metric tested alone. Several metrics of your own are one family: adjust their
# p-values together with Holm, as the report does for its exploratory family.

# %%
candidates = {"moved since the jumper": moved, "per-step distance": step}
p_values = []
for name, values in candidates.items():
    result = separation(
        values[explore],
        events["violated"].to_numpy()[explore],
        events["jumper"].to_numpy()[explore],
        events["r"].to_numpy()[explore],
        permutations=999,
        rng=np.random.default_rng(1),
        min_events=3,
    )
    p_values += [(name, r, res.p_value) for r, res in result.items() if res.p_value is not None]
adjusted = holm(np.array([p for _, _, p in p_values], dtype=float))
for (name, r, p), p_adj in zip(p_values, adjusted):
    print(f"{name}, r = {r}: p {p:.4f}, Holm-adjusted {p_adj:.4f}")
