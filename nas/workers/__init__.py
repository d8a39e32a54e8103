"""The bodies of Ray trials and tasks: what runs on a worker, nothing that runs on the driver. Each takes the job's
`JobContext` (pickled by Ray) and the arguments of its one task, opens its own store connection and writes what it
measures as it happens. `setup.py` is what every worker does first."""
