"""The dashboard's shared code: `common.py` (access gate, read-only store, cached loaders, job picker, front figure)
and `data.py` (plain pandas functions the pages draw, tested without Streamlit)."""
