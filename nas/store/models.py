"""The whole schema in one place. Every change goes through an alembic revision in migrations/versions/."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# Job states: QUEUED -> RUNNING -> COMPLETE | FAILED | CANCELLED | INTERRUPTED (Ctrl-C / SIGTERM; `nas resume`)
# Trial states: WAITING -> RUNNING -> COMPLETE | FAILED | PRUNED
class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="QUEUED")
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the `nas serve` running it
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    plan: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # `nas plan`'s estimate, when one was made
    __table_args__ = (Index("ix_jobs_status", "status"),)


class Trial(Base):
    __tablename__ = "trials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))  # teacher | student | assistant | reference | hpo-sample | hpo-full
    state: Mapped[str] = mapped_column(String(16), default="WAITING")
    config: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    compute: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # device, precision, GPU name it trained with
    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_trials_job_number"),
        Index("ix_trials_job_state", "job_id", "state"),
    )


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    split: Mapped[str] = mapped_column(String(16))  # train | dev | test
    source: Mapped[str] = mapped_column(String(16))  # proxy | final
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (Index("ix_metrics_trial", "trial_id"),)


class LatencyMeasurement(Base):
    __tablename__ = "latency_measurements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), nullable=True)
    config_key: Mapped[str] = mapped_column(String(128))  # shape key, so measurements can be cached per shape
    fingerprint: Mapped[dict] = mapped_column(JSON)
    fingerprint_id: Mapped[str] = mapped_column(String(16))  # short hash of the fingerprint, for grouping
    device: Mapped[str] = mapped_column(String(16))
    runtime: Mapped[str] = mapped_column(String(16))  # eager | onnx | int8
    dtype: Mapped[str] = mapped_column(String(8))
    batch: Mapped[int] = mapped_column(Integer)
    seq_len: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    warmup: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    p50_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    mean_ms: Mapped[float] = mapped_column(Float)
    cv: Mapped[float] = mapped_column(Float)
    # the machine's 1-minute load average per core when the measurement ended, and whether that was above what the
    # cores can run (another job beside it: its figures are flagged on the front)
    load: Mapped[float | None] = mapped_column(Float, nullable=True)
    busy: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    reference_p50_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # the teacher's, same rounds
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (
        Index("ix_latency_trial", "trial_id"),
        Index("ix_latency_cache", "fingerprint_id", "config_key"),
    )


class Artefact(Base):
    __tablename__ = "artefacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), nullable=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # model | checkpoint | export | teacher
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (Index("ix_artefacts_job", "job_id"), Index("ix_artefacts_trial", "trial_id"))
