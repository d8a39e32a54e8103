"""Reading a job's results: `front.py` (comparable rows, the Pareto front, dominance by references), `curves.py`
(hypervolume over wall-clock time), `export.py` (a trial as a ready-to-load model directory)."""
