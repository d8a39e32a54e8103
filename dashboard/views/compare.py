"""Compare: the fronts of several jobs, separated by fingerprint."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from nas.ui.dashboard.common import load_job, load_jobs


def compare_page():
    st.title("Compare jobs")
    jobs = load_jobs()
    if jobs.empty:
        st.info("No jobs yet.")
        return
    labels = {r.id: f"{r.id} · {r.name}" for r in jobs.itertuples()}
    chosen = st.multiselect("Jobs", jobs["id"].tolist(), default=jobs["id"].tolist()[-2:], format_func=lambda i: labels[i])
    rows = []
    for job_id in chosen:
        f = load_job(job_id)["front"]
        fp = (f["fingerprint"] or {})
        for r in f["front"]:
            rows.append({"job": labels[job_id], "fingerprint": f"{fp.get('cpu')} · {fp.get('threads')} thr",
                         "p50_ms": r["p50_ms"], "metric": r["metric"], "trial": r["trial"]})
    if not rows:
        st.info("The chosen jobs have no front yet.")
        return
    data = pd.DataFrame(rows)
    groups = data["fingerprint"].unique()
    if len(groups) > 1:
        st.warning("These fronts were measured on different machines or settings: they are shown in separate plots.")
    for g in groups:
        part = data[data["fingerprint"] == g].sort_values("p50_ms")
        fig = px.line(part, x="p50_ms", y="metric", color="job", markers=True, line_shape="hv", hover_data=["trial"],
                      log_x=True, title=f"measured on {g}")
        st.plotly_chart(fig, width="stretch", key=f"cmp-{g}")


compare_page()
