"""Entry point of the dashboard (`nas dashboard`): the access gate, then navigation over the page scripts in
dashboard/views/ (one file per page); what they share is in nas/ui/dashboard/."""

import streamlit as st

from nas.ui.dashboard.common import HOST, LOOPBACK, URL, gate

st.set_page_config(page_title="Distillation NAS", layout="wide")
if gate():
    st.caption(f"store: {(URL or 'default ($NAS_HOME/nas.db)').split('@')[-1]} · read-only"
               + ("" if LOOPBACK else f" · bound to {HOST}, password protected"))
    st.navigation([st.Page("views/jobs.py", title="Jobs", default=True),
                   st.Page("views/job.py", title="Job"),
                   st.Page("views/compare.py", title="Compare"),
                   st.Page("views/submit.py", title="Submit"),
                   st.Page("views/export.py", title="Export")]).run()
