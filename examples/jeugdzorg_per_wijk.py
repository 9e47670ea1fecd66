# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Jeugdzorg per wijk, with 95% intervals
#
# How many jeugdhulp trajectories does each wijk of Voorbeeldstad have? Datapoort answers such a
# question with differential privacy: the gateway adds calibrated noise to every count and says how
# large that noise can be, as the half-width of a 95% interval. The analysts' client
# (`datapoort_client`) turns the answer into a DataFrame with the interval beside each count, so the
# uncertainty is plotted along with the numbers instead of being forgotten.
#
# Run it against a gateway with `DATAPOORT_URL` and `DATAPOORT_API_KEY` set, e.g. the demo
# (`datapoort demo`, the analyst's key in `demo-keys.json`). Open it as a notebook with jupytext, or run
# it as a script: `python examples/jeugdzorg_per_wijk.py` writes the plot to `DATAPOORT_EXAMPLE_PNG`
# (default `docs/jeugdzorg-per-wijk.png`).

# %%
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from datapoort_client import Gateway

matplotlib.use("Agg")  # draw to a file: no display needed

# %% [markdown]
# ## The question
#
# Jeugdzorg per wijk, with the wijk's name from the public `kerncijfers` table (a lookup after release,
# at no privacy cost). The query spends ε = 1 of the analyst's budget for the purpose
# `beleidsinformatie`; the answer holds, per wijk, the count and the interval the gateway reported.

# %%
with Gateway(os.environ["DATAPOORT_URL"], os.environ["DATAPOORT_API_KEY"]) as gateway:
    df = gateway.query(
        "SELECT j.wijk, k.wijknaam, COUNT(*) AS trajecten FROM jeugdzorg j "
        "JOIN kerncijfers k ON j.wijk = k.wijk GROUP BY j.wijk, k.wijknaam",
        purpose="beleidsinformatie",
        epsilon=1.0,
    )
df  # noqa: B018 - a notebook shows a cell's last value

# %% [markdown]
# What it cost and how: `df.attrs["privacy"]` is the gateway's privacy report.

# %%
privacy = df.attrs["privacy"]
report = privacy["aggregates"]["trajecten"]
summary = {
    "epsilon_spent": privacy["epsilon_spent"],
    "mechanism": report["mechanism"],
    "half_width_95": report["half_width"],
    "epsilon_remaining": privacy["budget"]["epsilon_remaining"],
    "request_id": privacy["request_id"],
}
summary  # noqa: B018

# %% [markdown]
# ## The plot
#
# Each bar is a released (noisy) count; its error bar is the gateway's 95% interval. A count is not
# rounded up to zero here: clipping is free post-processing, but the interval is the honest statement.

# %%
lower = df["trajecten"] - df["trajecten_lower"]
upper = df["trajecten_upper"] - df["trajecten"]
figure, axes = plt.subplots(figsize=(9, 4.8))
axes.bar(df["wijknaam"], df["trajecten"], color="#2a6f97", yerr=[lower, upper], capsize=5, ecolor="#1b1b1b")
axes.axhline(0, color="#888888", linewidth=0.8)
axes.set_ylabel("jeugdhulptrajecten")
axes.set_title(f"Jeugdzorg per wijk, {os.environ.get('DATAPOORT_EXAMPLE_TITLE', 'Voorbeeldstad')}")
axes.tick_params(axis="x", rotation=30)
for label in axes.get_xticklabels():
    label.set_horizontalalignment("right")
axes.spines[["top", "right"]].set_visible(False)
figure.text(
    0.01,
    0.01,
    f"Differentially private counts (ε = {privacy['epsilon_spent']:g}, {report['mechanism']}); "
    f"error bars: the gateway's 95% interval, ±{report['half_width']:.1f}. Made with datapoort_client.",
    fontsize=8,
    color="#555555",
)
figure.tight_layout(rect=(0, 0.04, 1, 1))
png = Path(os.environ.get("DATAPOORT_EXAMPLE_PNG", "docs/jeugdzorg-per-wijk.png"))
png.parent.mkdir(parents=True, exist_ok=True)
figure.savefig(png, dpi=120)
plt.close(figure)
png  # noqa: B018
