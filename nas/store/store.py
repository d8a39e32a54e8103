"""The only code that speaks SQL. Everything returns plain dicts so callers never hold a session.

SQLite (the embedded default) runs in WAL mode, takes its write lock up front with BEGIN IMMEDIATE (so two writers never
deadlock on a lock upgrade) and waits on a busy timeout. PostgreSQL is used by URL, with a pre-pinged connection pool."""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Any, Iterable

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from nas.store.engine import StoreError, default_storage_url, make_engine, nas_home
from nas.store.models import Artefact, Job, LatencyMeasurement, Metric, Trial, utcnow
from nas.store.records import job_dict, latency_columns, latency_dict

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"
TERMINAL_TRIAL_STATES = ("COMPLETE", "FAILED", "PRUNED")



HEAD_REVISION = "0005"


class Store:
    def __init__(self, url: str | None = None, migrate: bool = True, read_only: bool = False):
        """`read_only`: an existing database opened for reading only (SQLite mode=ro, PostgreSQL read-only
        transactions); no migration, no writes, no write locks."""
        self.url = url or default_storage_url()
        self.read_only = read_only
        if self.url == default_storage_url() and not read_only:
            nas_home().mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.url, read_only)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.check()
        if migrate and not read_only:
            self.migrate()

    # -- setup -------------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Open one connection; a wrong host, port, password or path becomes a StoreError with the reason."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
            safe = make_url(self.url).render_as_string(hide_password=True)
            raise StoreError(f"storage: cannot connect to {safe}: {reason}") from None

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- jobs --------------------------------------------------------------------------------------------------------
    def create_job(self, name: str, spec: dict, status: str = "QUEUED", plan: dict | None = None) -> int:
        """A new job; `plan`: its time estimate (nas/plan.py), shown beside the stage wall times it measures."""
        with self.Session.begin() as s:
            job = Job(name=name, spec=spec, status=status, plan=plan)
            s.add(job)
            s.flush()
            return job.id

    def set_job_spec(self, job_id: int, spec: dict) -> None:
        """The job's spec as it runs (its `auto` latency devices resolved when the job starts)."""
        with self.Session.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(spec=spec))

    def set_job_status(self, job_id: int, status: str, stage: str | None = None, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status}
        if stage is not None:
            values["stage"] = stage
        if error is not None:
            values["error"] = error
        if status == "RUNNING":
            values["started_at"] = utcnow()
            values["finished_at"] = None
        if status in ("COMPLETE", "FAILED", "CANCELLED", "INTERRUPTED"):
            values["finished_at"] = utcnow()
        with self.Session.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    # -- the job service -----------------------------------------------------------------------------------------------
    def claim_job(self, worker: str, job_id: int | None = None) -> dict | None:
        """Atomically take the oldest QUEUED job (or `job_id` if it is QUEUED) for `worker`: at most one claimant per
        job, however many `nas serve` processes ask at once (SQLite: BEGIN IMMEDIATE serialises writers; PostgreSQL:
        SELECT ... FOR UPDATE SKIP LOCKED). Returns the job or None."""
        with self.Session.begin() as s:
            q = select(Job.id).where(Job.status == "QUEUED", Job.cancel_requested.is_(False))
            if job_id is not None:
                q = q.where(Job.id == job_id)
            q = q.order_by(Job.id).limit(1)
            if self.engine.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            picked = s.scalar(q)
            if picked is None:
                return None
            now = utcnow()
            res = s.execute(update(Job).where(Job.id == picked, Job.status == "QUEUED")
                            .values(status="RUNNING", claimed_by=worker, heartbeat_at=now, started_at=now,
                                    finished_at=None, claims=Job.claims + 1))
            if res.rowcount != 1:
                return None
            return job_dict(s.get(Job, picked))

    def job_heartbeat(self, job_id: int, worker: str) -> bool:
        """Refresh a claimed job's heartbeat; False when the job is no longer this worker's (reaped or cancelled)."""
        with self.Session.begin() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.claimed_by == worker, Job.status == "RUNNING")
                            .values(heartbeat_at=utcnow()))
            return res.rowcount == 1

    def release_claim(self, job_id: int, worker: str) -> bool:
        """Take `worker`'s claim off a RUNNING job (its service is dead and a user resumes the job by hand)."""
        with self.Session.begin() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.claimed_by == worker, Job.status == "RUNNING")
                            .values(claimed_by=None))
            return res.rowcount == 1

    def request_cancel(self, job_id: int) -> str:
        """A QUEUED job is cancelled at once; a RUNNING one is flagged for its `serve` to stop. Returns the new status."""
        with self.Session.begin() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            if job.status == "QUEUED":
                job.status, job.finished_at, job.cancel_requested = "CANCELLED", utcnow(), True
            elif job.status == "RUNNING":
                job.cancel_requested = True
            return job.status

    def reap_stale_jobs(self, stale_after_s: float, max_claims: int = 3) -> list[int]:
        """RUNNING jobs whose claimant stopped heartbeating: back to QUEUED (their RUNNING trials to WAITING), or FAILED
        after `max_claims` claims. Jobs run without a service (no claimant) are left alone. Returns the reaped ids."""
        cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
        reaped = []
        with self.Session.begin() as s:
            stale = s.scalars(select(Job).where(Job.status == "RUNNING", Job.claimed_by.is_not(None),
                                                Job.heartbeat_at < cutoff)).all()
            for job in stale:
                reaped.append(job.id)
                s.execute(update(Trial).where(Trial.job_id == job.id, Trial.state == "RUNNING")
                          .values(state="WAITING", error="its job service died; retried"))
                if job.claims >= max_claims:
                    job.status, job.finished_at = "FAILED", utcnow()
                    job.error = f"claimed {job.claims} times and lost each time (job services died)"
                else:
                    job.status, job.claimed_by = "QUEUED", None
        return reaped

    def set_job_stage(self, job_id: int, stage: str) -> None:
        with self.Session.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(stage=stage))

    def get_job(self, job_id: int) -> dict | None:
        with self.Session() as s:
            job = s.get(Job, job_id)
            return job_dict(job) if job else None

    def list_jobs(self) -> list[dict]:
        with self.Session() as s:
            jobs = s.scalars(select(Job).order_by(Job.id)).all()
            counts = dict(
                s.execute(
                    select(Trial.job_id, func.count()).where(Trial.state == "COMPLETE").group_by(Trial.job_id)
                ).all()
            )
            out = []
            for j in jobs:
                d = job_dict(j)
                d["trials_complete"] = counts.get(j.id, 0)
                out.append(d)
            return out

    def best_metrics(self) -> dict[tuple[int, str], float]:
        """(job id, metric name) -> the best dev value among the job's completed students (one grouped query)."""
        with self.Session() as s:
            q = (select(Trial.job_id, Metric.name, func.max(Metric.value))
                 .join(Metric, Metric.trial_id == Trial.id)
                 .where(Trial.kind == "student", Trial.state == "COMPLETE", Metric.split == "dev",
                        Metric.name.in_(["accuracy", "f1_macro", "auc", "mrr"]))
                 .group_by(Trial.job_id, Metric.name))
            return {(j, n): v for j, n, v in s.execute(q).all()}

    def count_rows(self) -> dict[str, int]:
        with self.Session() as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in (Job, Trial, Metric, LatencyMeasurement, Artefact)}

    # -- trials ------------------------------------------------------------------------------------------------------
    def add_trial(self, job_id: int, kind: str, config: dict, state: str = "WAITING") -> dict:
        """Next trial number within the job. SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL locks the job's
        row for the transaction (so 32 writers on one job queue briefly instead of colliding); the unique (job, number)
        constraint and a retry cover anything else."""
        for _ in range(20):
            try:
                with self.Session.begin() as s:
                    if self.engine.dialect.name == "postgresql":
                        s.execute(select(Job.id).where(Job.id == job_id).with_for_update())
                    number = (s.scalar(select(func.max(Trial.number)).where(Trial.job_id == job_id)) or 0) + 1
                    trial = Trial(job_id=job_id, number=number, kind=kind, config=config, state=state, attempts=0)
                    s.add(trial)
                    s.flush()
                    return {"id": trial.id, "number": number}
            except IntegrityError:
                continue
        raise RuntimeError(f"could not allocate a trial number for job {job_id}")

    def start_trial(self, trial_id: int) -> None:
        now = utcnow()
        with self.Session.begin() as s:
            s.execute(
                update(Trial)
                .where(Trial.id == trial_id)
                .values(state="RUNNING", started_at=now, heartbeat_at=now, attempts=Trial.attempts + 1, error=None)
            )

    def set_trial_compute(self, trial_id: int, compute: dict) -> None:
        """Where the trial trains: {"device", "precision", "gpu"} (stored beside its latency fingerprint)."""
        with self.Session.begin() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(compute=compute))

    def heartbeat(self, trial_id: int) -> None:
        with self.Session.begin() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(heartbeat_at=utcnow()))

    def finish_trial(self, trial_id: int, state: str, error: str | None = None, if_running: bool = False) -> None:
        """`if_running`: only a trial still RUNNING (a worker's failure must not overwrite the WAITING its driver set
        when the job was interrupted: the failure is the interruption, and the trial runs again on resume)."""
        assert state in TERMINAL_TRIAL_STATES + ("WAITING",), state
        where = [Trial.id == trial_id] + ([Trial.state == "RUNNING"] if if_running else [])
        with self.Session.begin() as s:
            s.execute(update(Trial).where(*where).values(state=state, error=error, finished_at=utcnow()))

    def set_trial_note(self, trial_id: int, note: str) -> None:
        """A message on a trial that stays in its state (the teacher check's warning)."""
        with self.Session.begin() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(error=note))

    def reset_unfinished_trials(self, job_id: int) -> int:
        """On resume: a trial left RUNNING by a dead process goes back to WAITING (never stays a zombie)."""
        with self.Session.begin() as s:
            res = s.execute(
                update(Trial).where(Trial.job_id == job_id, Trial.state == "RUNNING").values(state="WAITING", error="interrupted; retried")
            )
            return res.rowcount or 0

    def requeue_lost_trials(self, job_id: int, kind: str, max_attempts: int = 3) -> tuple[int, int]:
        """Trials left RUNNING after their Ray tasks returned (the worker or its node died without a word): back to
        WAITING to be run again, or FAILED once they have been started `max_attempts` times. Returns (requeued, failed)."""
        lost = (Trial.job_id == job_id, Trial.kind == kind, Trial.state == "RUNNING")
        with self.Session.begin() as s:
            failed = s.execute(update(Trial).where(*lost, Trial.attempts >= max_attempts).values(
                state="FAILED", finished_at=utcnow(),
                error=f"its Ray worker died {max_attempts} times without reporting a result")).rowcount or 0
            requeued = s.execute(update(Trial).where(*lost).values(
                state="WAITING", error="its Ray worker died without reporting a result; retried")).rowcount or 0
            return requeued, failed

    def get_trial(self, trial_id: int) -> dict | None:
        T = Trial.__table__
        with self.Session() as s:
            t = s.execute(select(T).where(T.c.id == trial_id)).mappings().first()
            return self._trial_dicts(s, [t])[0] if t else None

    def get_trial_by_number(self, job_id: int, number: int) -> dict | None:
        T = Trial.__table__
        with self.Session() as s:
            t = s.execute(select(T).where(T.c.job_id == job_id, T.c.number == number)).mappings().first()
            return self._trial_dicts(s, [t])[0] if t else None

    def trials(self, job_id: int, kind: str | Iterable[str] | None = None, state: str | None = None) -> list[dict]:
        """Trials of a job with their metrics, latency rows and artefacts (four queries, plain rows: fast at 10^5)."""
        T = Trial.__table__
        with self.Session() as s:
            q = select(T).where(T.c.job_id == job_id)
            if kind is not None:
                q = q.where(T.c.kind.in_([kind] if isinstance(kind, str) else list(kind)))
            if state is not None:
                q = q.where(T.c.state == state)
            rows = s.execute(q.order_by(T.c.number)).mappings().all()
            return self._trial_dicts(s, rows, job_id, kind is None and state is None)

    def _trial_dicts(self, s, trials, job_id: int | None = None, whole_job: bool = False) -> list[dict]:
        ids = [t["id"] for t in trials]
        metrics: dict[int, list[dict]] = {i: [] for i in ids}
        latency: dict[int, list[dict]] = {i: [] for i in ids}
        artefacts: dict[int, list[dict]] = {i: [] for i in ids}
        if ids:
            M, L, A = Metric.__table__, LatencyMeasurement.__table__, Artefact.__table__
            # a whole job is selected through its trials (a join), a subset by id
            def restrict(q, table):
                if whole_job and job_id is not None:
                    return q.join(Trial.__table__, Trial.__table__.c.id == table.c.trial_id).where(
                        Trial.__table__.c.job_id == job_id)
                return q.where(table.c.trial_id.in_(ids))

            for m in s.execute(restrict(select(M.c.trial_id, M.c.name, M.c.value, M.c.split, M.c.source, M.c.step,
                                                M.c.created_at),
                                        M).order_by(M.c.id)):
                metrics[m[0]].append({"name": m[1], "value": m[2], "split": m[3], "source": m[4], "step": m[5],
                                      "created_at": m[6]})
            for lm in s.execute(restrict(select(L), L).order_by(L.c.id)).mappings():
                latency[lm["trial_id"]].append(latency_dict(lm))
            for a in s.execute(restrict(select(A.c.trial_id, A.c.kind, A.c.path), A).order_by(A.c.id)):
                if a[0] in artefacts:
                    artefacts[a[0]].append({"kind": a[1], "path": a[2]})
        return [
            {
                "id": t["id"], "job_id": t["job_id"], "number": t["number"], "kind": t["kind"], "state": t["state"],
                "config": t["config"], "created_at": t["created_at"], "started_at": t["started_at"],
                "finished_at": t["finished_at"], "heartbeat_at": t["heartbeat_at"], "attempts": t["attempts"],
                "error": t["error"], "compute": t.get("compute"), "metrics": metrics[t["id"]], "latency": latency[t["id"]], "artefacts": artefacts[t["id"]],
            }
            for t in trials
        ]

    # -- metrics, latency, artefacts ---------------------------------------------------------------------------------
    def add_metric(self, trial_id: int, name: str, value: float, split: str, source: str, step: int | None = None) -> None:
        assert source in ("proxy", "final"), source
        assert split in ("train", "dev", "test"), split
        with self.Session.begin() as s:
            s.add(Metric(trial_id=trial_id, name=name, value=float(value), split=split, source=source, step=step))

    def add_latency(self, trial_id: int | None, config_key: str, m: dict) -> None:
        with self.Session.begin() as s:
            s.add(LatencyMeasurement(trial_id=trial_id, config_key=config_key, **latency_columns(m)))

    def find_latency(self, fingerprint_id: str, config_key: str, settings: dict) -> dict | None:
        """A cached measurement of the same shape, on the same fingerprint, with the same settings."""
        with self.Session() as s:
            q = (
                select(LatencyMeasurement)
                .where(
                    LatencyMeasurement.fingerprint_id == fingerprint_id,
                    LatencyMeasurement.config_key == config_key,
                    LatencyMeasurement.runtime == settings["runtime"],
                    LatencyMeasurement.dtype == settings["dtype"],
                    LatencyMeasurement.batch == settings["batch"],
                    LatencyMeasurement.seq_len == settings["seq_len"],
                    LatencyMeasurement.threads == settings["threads"],
                )
                .order_by(LatencyMeasurement.id.desc())
                .limit(1)
            )
            row = s.scalar(q)
            return latency_dict(row) if row else None

    def add_artefact(self, job_id: int, trial_id: int | None, kind: str, path: str) -> None:
        with self.Session.begin() as s:
            s.add(Artefact(job_id=job_id, trial_id=trial_id, kind=kind, path=str(path)))

    def job_artefacts(self, job_id: int, kind: str | None = None) -> list[dict]:
        with self.Session() as s:
            q = select(Artefact).where(Artefact.job_id == job_id)
            if kind:
                q = q.where(Artefact.kind == kind)
            return [{"trial_id": a.trial_id, "kind": a.kind, "path": a.path} for a in s.scalars(q.order_by(Artefact.id))]
