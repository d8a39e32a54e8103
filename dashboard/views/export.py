from nas.dashboard_ui import export_page

export_page()
