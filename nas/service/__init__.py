"""Running jobs: `queue.py` (submit / serve / cancel / the reaper of stale claims) and `cluster.py` (Ray: start local,
join a cluster, run store trials as Ray Tune trials)."""
