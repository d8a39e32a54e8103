"""The job spec and search spaces (pydantic): `job.py` (JobSpec and its sections), `space.py` (search spaces, checked
against the teacher), `errors.py` (SpecError with the field path, and how a validation error becomes one)."""
