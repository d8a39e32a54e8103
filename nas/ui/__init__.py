"""What a person uses: `cli.py` (the `nas` command) and `dashboard/` (the Streamlit pages' shared code and data
functions; the page scripts are in dashboard/ at the repository root)."""
