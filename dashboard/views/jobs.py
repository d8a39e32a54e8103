from nas.dashboard_ui import jobs_page

jobs_page()
