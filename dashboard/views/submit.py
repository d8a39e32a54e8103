from nas.dashboard_ui import submit_page

submit_page()
