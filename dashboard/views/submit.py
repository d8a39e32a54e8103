"""Submit: a spec validated with the CLI's own code and queued as a job."""

from __future__ import annotations

import streamlit as st

from nas.ui.dashboard import data as dd
from nas.ui.dashboard.common import URL, load_jobs


def submit_page():
    st.title("Submit a job")
    st.caption("The spec is validated with the same code as `nas validate` (dataset, teacher and search space included).")
    up = st.file_uploader("Spec file (YAML)", type=["yaml", "yml"])
    text = st.text_area("…or paste a spec", value=up.getvalue().decode() if up else "", height=260, key="spec_text")
    c1, c2 = st.columns(2)
    validate = c1.button("Validate", key="validate")
    enqueue = c2.button("Enqueue", key="enqueue", type="primary")
    if validate or enqueue:
        spec, error = dd.validate_spec_text(text)
        if error:
            st.error(error)
            return
        st.success(f"valid: {spec.name}")
        if enqueue:
            job_id = dd.enqueue_job(URL, spec)
            load_jobs.clear()
            st.success(f"job {job_id} queued. Until a job service picks it up, run it with `nas resume {job_id}`.")


submit_page()
