from nas.dashboard_ui import compare_page

compare_page()
