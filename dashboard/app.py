"""Dashboard placeholder: lists jobs and one job's Pareto front from the store (read-only). The full dashboard is issue 6."""

import os

import pandas as pd
import streamlit as st

from nas.pipeline import front_rows
from nas.store import Store


def jobs_page():
    store = Store(os.environ.get("NAS_STORAGE") or None)
    jobs = store.list_jobs()
    st.title("Jobs")
    if not jobs:
        st.info("No jobs yet. Run `nas run examples/bbc_quick.yaml`.")
        return
    st.dataframe(pd.DataFrame([{k: j[k] for k in ("id", "name", "status", "stage", "trials_complete", "created_at")}
                               for j in jobs]), width="stretch")
    job_id = st.selectbox("Job", [j["id"] for j in jobs])
    f = front_rows(store, job_id)
    if f["rows"]:
        st.subheader("Pareto front (dev metric vs p50 latency)")
        st.dataframe(pd.DataFrame(f["front"]), width="stretch")


st.navigation([st.Page(jobs_page, title="Jobs")]).run()
