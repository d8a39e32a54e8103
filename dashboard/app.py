"""Entry point of the dashboard (`nas dashboard`): the access gate, then navigation over the pages in dashboard/views/.
The pages' code is in nas/dashboard_ui.py."""

import streamlit as st

from nas.dashboard_ui import HOST, LOOPBACK, URL, gate

st.set_page_config(page_title="Distillation NAS", layout="wide")
if gate():
    st.caption(f"store: {(URL or 'default ($NAS_HOME/nas.db)').split('@')[-1]} · read-only"
               + ("" if LOOPBACK else f" · bound to {HOST}, password protected"))
    st.navigation([st.Page("views/jobs.py", title="Jobs", default=True),
                   st.Page("views/job.py", title="Job"),
                   st.Page("views/compare.py", title="Compare"),
                   st.Page("views/submit.py", title="Submit"),
                   st.Page("views/export.py", title="Export")]).run()
