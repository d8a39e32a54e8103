from nas.dashboard_ui import job_page

job_page()
