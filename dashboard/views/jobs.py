"""Jobs: every job in the store with its progress, live."""

from __future__ import annotations

import streamlit as st

from nas.ui.dashboard.common import LIVE_S, load_jobs


def jobs_page():
    st.title("Jobs")
    live = st.toggle("Live updates", value=True, key="jobs_live")

    @st.fragment(run_every=LIVE_S if live else None)
    def table():
        with st.spinner("Loading jobs…"):
            jobs = load_jobs()
        if jobs.empty:
            st.info("No jobs yet. Run `nas run examples/bbc_quick.yaml`, or submit one on the Submit page.")
            return
        st.dataframe(jobs, width="stretch", hide_index=True,
                     column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
                                    "best dev": st.column_config.NumberColumn(format="%.4f")})
        queued = jobs[jobs["status"] == "QUEUED"]
        if not queued.empty:
            st.caption(f"{len(queued)} queued job(s): nothing runs them until a job service picks them up; "
                       f"run one here with `nas resume {int(queued['id'].iloc[0])}`.")
    table()


jobs_page()
