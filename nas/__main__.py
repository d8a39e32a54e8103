"""`python -m nas`: the `nas` command (nas/ui/cli.py)."""

from nas.ui.cli import app

app(prog_name="nas")
