"""Submit: a spec validated with the CLI's own code, its time estimated on this machine (`nas plan`), and queued."""

from __future__ import annotations

import streamlit as st

from nas.ui.dashboard import data as dd
from nas.ui.dashboard.common import URL, load_jobs


def submit_page():
    st.title("Submit a job")
    st.caption("The spec is validated with the same code as `nas validate` (dataset, teacher and search space included).")
    up = st.file_uploader("Spec file (YAML)", type=["yaml", "yml"])
    text = st.text_area("…or paste a spec", value=up.getvalue().decode() if up else "", height=260, key="spec_text")
    c1, c2, c3 = st.columns(3)
    validate = c1.button("Validate", key="validate")
    estimate = c2.button("Estimate time", key="estimate", help="`nas plan`: a few calibration steps of the teacher and "
                         "of the smallest and largest student on this machine, then every stage's time (about a minute)")
    enqueue = c3.button("Enqueue", key="enqueue", type="primary")
    if validate or estimate or enqueue:
        spec, error = dd.validate_spec_text(text)
        if error:
            st.error(error)
            return
        st.success(f"valid: {spec.name}")
        if estimate:
            from nas.plan import plan

            with st.spinner("Calibrating…"):
                st.session_state["plan"] = {"text": text, "plan": plan(spec)}
        planned = st.session_state.get("plan")
        planned = planned["plan"] if planned and planned["text"] == text else None
        if planned:
            st.markdown(f"**Estimate on this machine** ({planned['threads']} CPU threads, {planned['rows']} rows"
                        + (", teacher cached" if planned["teacher_cached"] else "") + ")")
            st.dataframe(dd.plan_table(planned), width="stretch", hide_index=True, key="plan_table")
        if enqueue:
            job_id = dd.enqueue_job(URL, spec, planned)
            load_jobs.clear()
            st.success(f"job {job_id} queued" + (" with its estimate" if planned else "")
                       + f". Until a job service picks it up, run it with `nas resume {job_id}`.")


submit_page()
