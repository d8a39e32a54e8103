"""`nas`: run and inspect distillation-aware architecture searches."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer

from nas.ui import exports
from nas.ui.fronts import print_front as _print_front
from nas.ui.fronts import shape_text as _shape
from nas.ui.base import STORAGE_HELP, stop_on_signals
from nas.ui.base import open_store as _store
from nas.ui.base import user_error as _user_error

app = typer.Typer(help=__doc__ + "\n\nA job spec (YAML) says which teacher, dataset, search space, objectives, latency "
                  "settings and budgets to use; see examples/.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


@app.command()
def run(spec_file: str = typer.Argument(..., help="Path to a job spec YAML."),
        storage: Optional[str] = typer.Option(None, help="Override the spec's storage URL."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address to join (default: start Ray locally)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        export_dir: Optional[str] = typer.Option(None, help="Afterwards, export the most accurate front point to "
                                                 "EXPORT_DIR/job-N-trial-M."),
        estimate: bool = typer.Option(False, "--plan", help="First estimate every stage's time (`nas plan`, a few "
                                      "calibration steps), print it and store it on the job beside the measured times.")):
    """Validate SPEC_FILE, run the job to completion and print its Pareto front."""
    from nas.pipeline import JobInterrupted, prepare, run_job
    from nas.stages.teacher import TeacherUnfit
    from nas.service.cluster import check_ray_address
    from nas.spec.errors import SpecError
    from nas.spec.job import load_spec
    from nas.store import StoreError

    try:
        spec = load_spec(spec_file)
        if storage:
            spec = spec.model_copy(update={"storage": storage})
        prepare(spec, cluster=address is not None)  # all input errors surface before the store is opened or written
        check_ray_address(address)
        if export_dir:
            from nas.paths import confined_path

            confined_path(export_dir, "--export-dir", "NAS_EXPORT_ROOT")
        store = _store(spec.storage or os.environ.get("NAS_STORAGE"))
        p = _estimate(spec) if estimate else None
        with stop_on_signals():
            job_id = run_job(spec, store, progress=not quiet, ray_address=address, plan=p)
    except (SpecError, StoreError) as exc:
        _user_error(exc)
    except JobInterrupted as exc:
        _interrupted(exc)
    except TeacherUnfit as exc:
        typer.secho(f"error: job stopped: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    _print_front(store, job_id, as_json=False)
    if export_dir:
        _export_best(store, job_id, export_dir)
    _stage_times(store, job_id)
    typer.echo(f"\nsee it in the dashboard: nas dashboard, then http://127.0.0.1:8501/job?job={job_id}")


def _stage_times(store, job_id: int) -> None:
    from nas.store.records import stage_times
    from nas.ui.fronts import print_stage_times

    rows = stage_times(store.get_job(job_id), store.trials(job_id))
    if rows:
        typer.echo("\nwall time of each stage" + (" beside its estimate" if rows[-1]["estimate_s"] is not None else "")
                   + ":")
        print_stage_times(rows)


def _estimate(spec) -> dict:
    from nas.plan import plan as make_plan
    from nas.ui.fronts import print_plan

    typer.echo("calibrating (a few steps of the teacher and of the smallest and largest student)...", err=True)
    p = make_plan(spec)
    print_plan(spec.name, p)
    return p


def _interrupted(exc) -> None:
    typer.secho(f"\njob {exc.job_id} interrupted in stage {exc.stage}: its running trials go back to the queue; "
                f"`nas resume {exc.job_id}` continues it", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(130)


def _export_best(store, job_id: int, export_dir: str) -> None:
    import pathlib

    from nas.spec.errors import SpecError

    from nas.results.export import export_trial
    from nas.results.front import front_rows

    front = front_rows(store, job_id)["front"]
    if not front:
        typer.echo("nothing to export: the front is empty")
        return
    best = max(front, key=lambda r: r["metric"])
    out = pathlib.Path(export_dir) / f"job-{job_id}-trial-{best['trial']}"
    n = 1
    while out.exists() and (not out.is_dir() or any(out.iterdir())):  # an earlier run's export (another store's job N)
        n += 1
        out = pathlib.Path(export_dir) / f"job-{job_id}-trial-{best['trial']}-{n}"
    try:
        path = export_trial(store, job_id, best["trial"], out)
    except SpecError as exc:
        _user_error(exc)
    typer.echo(f"exported the most accurate front point (trial {best['trial']}) to {path}")
    typer.echo(f"load it: AutoModelForSequenceClassification.from_pretrained('{path / 'model'}')")


@app.command()
def resume(job: int = typer.Argument(..., help="Job id."), storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
           address: Optional[str] = typer.Option(None, help="Ray cluster address to join."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")):
    """Continue a job that was interrupted (or run a queued one): RUNNING trials go back to the queue, finished ones are
    kept."""
    from nas.pipeline import JobInterrupted, resume_job
    from nas.service.cluster import check_ray_address
    from nas.service.queue import check_resumable
    from nas.spec.errors import SpecError

    store = _store(storage)
    try:
        check_ray_address(address)
        current = store.get_job(job)
        if current is not None:
            check_resumable(store, current)
        with stop_on_signals():
            resume_job(store, job, ray_address=address, progress=not quiet)
    except SpecError as exc:
        _user_error(exc)
    except JobInterrupted as exc:
        _interrupted(exc)
    _print_front(store, job, as_json=False)
    _stage_times(store, job)


@app.command()
def submit(spec_file: str = typer.Argument(..., help="Path to a job spec YAML."),
           storage: Optional[str] = typer.Option(None, help="Override the spec's storage URL."),
           estimate: bool = typer.Option(False, "--plan", help="Estimate every stage's time on this machine first "
                                         "(`nas plan`) and store it on the job.")):
    """Validate SPEC_FILE and queue it in the store; a `nas serve` process picks it up (or run it with `nas resume`)."""
    from nas.pipeline import prepare
    from nas.spec.errors import SpecError
    from nas.spec.job import load_spec

    try:
        spec = load_spec(spec_file)
        if storage:
            spec = spec.model_copy(update={"storage": storage})
        prepare(spec, cluster=True)  # the devices are those of the machine that runs it (`nas serve` checks them)
    except SpecError as exc:
        _user_error(exc)
    store = _store(spec.storage or os.environ.get("NAS_STORAGE"))
    p = _estimate(spec) if estimate else None
    job_id = store.create_job(spec.name, spec.model_dump(mode="json"), status="QUEUED", plan=p)
    typer.echo(f"job {job_id} queued in {store.url.split('@')[-1]}; `nas serve` runs queued jobs "
               f"(or run this one now: nas resume {job_id})")


@app.command()
def serve(storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
          once: bool = typer.Option(False, "--once", help="Exit when the queue is empty."),
          poll: float = typer.Option(2.0, min=0.05, help="Seconds between looks at the queue."),
          heartbeat: float = typer.Option(10.0, min=0.1, help="Seconds between heartbeats of a running job."),
          stale_after: float = typer.Option(120.0, min=1.0, help="A RUNNING job whose service has not heartbeated "
                                                                 "for this long is put back in the queue (at least 3 "
                                                                 "heartbeats)."),
          address: Optional[str] = typer.Option(None, help="Ray cluster address for the jobs (default: local Ray).")):
    """Run queued jobs: claim one atomically (any number of `serve` processes may share a store), run it, repeat."""
    from nas.service.cluster import check_ray_address
    from nas.service.queue import serve as run_service
    from nas.spec.errors import SpecError
    from nas.store import StoreError

    if stale_after < 3 * heartbeat:
        _user_error(Exception(f"--stale-after: must be at least 3 heartbeats ({3 * heartbeat:g} s), or live jobs are "
                              f"taken from their service; found {stale_after:g}"))
    try:
        check_ray_address(address)
        n = run_service(storage or os.environ.get("NAS_STORAGE"), once=once, poll_s=poll, heartbeat_s=heartbeat,
                        stale_after_s=stale_after, ray_address=address)
    except (SpecError, StoreError) as exc:
        _user_error(exc)
    typer.echo(f"served {n} job(s)")


@app.command()
def cancel(job: int = typer.Argument(..., help="Job id."), storage: Optional[str] = typer.Option(None, help=STORAGE_HELP)):
    """Cancel JOB: a queued job at once, a running one at its service's next heartbeat."""
    store = _store(storage)
    try:
        status = store.request_cancel(job)
    except KeyError:
        _user_error(Exception(f"JOB: no job {job} in {store.url}"))
    msg = {"CANCELLED": "cancelled", "RUNNING": "cancel requested; its `nas serve` stops it at the next heartbeat"}
    typer.echo(f"job {job}: {msg.get(status, f'already {status}, nothing to cancel')}")


@app.command()
def jobs(storage: Optional[str] = typer.Option(None, help=STORAGE_HELP)):
    """List jobs with status, stage and completed trials."""
    store = _store(storage)
    rows = store.list_jobs()
    if not rows:
        typer.echo(f"no jobs in {store.url}")
        return
    typer.echo(f"{'id':>4}  {'name':<24} {'status':<10} {'stage':<8} {'trials':>6}  created")
    for j in rows:
        typer.echo(f"{j['id']:>4}  {j['name'][:24]:<24} {j['status']:<10} {str(j['stage'] or ''):<8} "
                   f"{j['trials_complete']:>6}  {j['created_at']:%Y-%m-%d %H:%M:%S}")


@app.command()
def status(job: int = typer.Argument(..., help="Job id."), storage: Optional[str] = typer.Option(None, help=STORAGE_HELP)):
    """One job's status, stage, error and trial counts by state."""
    store = _store(storage)
    j = store.get_job(job)
    if j is None:
        _user_error(Exception(f"JOB: no job {job} in {store.url}"))
    counts: dict[str, int] = {}
    for t in store.trials(job):
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    typer.echo(f"job {job} {j['name']!r}: {j['status']} (stage {j['stage']}); trials {counts}")
    if j["error"]:
        typer.echo(f"error: {j['error']}")
    _stage_times(store, job)


@app.command()
def trials(job: int = typer.Argument(..., help="Job id."), storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
           as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")):
    """Every trial of JOB: kind, state, shape, dev metric, latency."""
    from nas.store.records import metric_value

    store = _store(storage)
    if store.get_job(job) is None:
        _user_error(Exception(f"JOB: no job {job} in {store.url}"))
    for t in store.trials(job):
        lat = t["latency"][-1] if t["latency"] else None
        row = {"trial": t["number"], "kind": t["kind"], "state": t["state"], "shape": t["config"].get("shape"),
               "dev_accuracy": metric_value(t, "accuracy", "dev"), "p50_ms": lat["p50_ms"] if lat else None,
               "error": (t["error"] or "").splitlines()[0] if t["error"] else None}
        if as_json:
            typer.echo(json.dumps(row))
        else:
            s = row["shape"] or {}
            acc = f"{row['dev_accuracy']:.4f}" if row["dev_accuracy"] is not None else "-"
            p50 = f"{row['p50_ms']:.3f}" if row["p50_ms"] is not None else "-"
            what = ((f"L{s.get('layers')}/H{s.get('hidden')}/A{s.get('heads')}/F{s.get('ffn')}"
                     if "family" not in s else _shape(s)) if s else str(t["config"].get("name") or "-"))
            typer.echo(f"{row['trial']:>4} {row['kind']:<9} {row['state']:<9} {what:<22} acc {acc}  p50 {p50} ms  "
                       f"{row['error'] or ''}")


@app.command()
def pareto(job: int = typer.Argument(..., help="Job id."), storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
           as_json: bool = typer.Option(False, "--json", help="Print the front as JSON."),
           target: Optional[str] = typer.Option(None, "--target", help="Only this latency target (its name or index); "
                                                "default: every target of the job, the search objective first.")):
    """The Pareto front of JOB (dev metric up, measured latency down) on each latency target, with the teacher as
    reference."""
    from nas.spec.errors import SpecError

    store = _store(storage)
    try:
        _print_front(store, job, as_json, target)
    except SpecError as exc:
        _user_error(exc)


app.command()(exports.export)
app.command("check-export")(exports.check_export)
app.command()(exports.predict)


@app.command()
def validate(spec_file: str = typer.Argument(..., help="Path to a job spec YAML."),
             cluster: bool = typer.Option(False, "--cluster", help="The job runs elsewhere (a Ray cluster, or the "
                                          "machine of a `nas serve`): skip the checks of this machine's GPUs.")):
    """Check a spec (and its search space and dataset) without running anything."""
    from nas.pipeline import prepare
    from nas.spec.errors import SpecError
    from nas.spec.job import load_spec

    try:
        prep = prepare(load_spec(spec_file), cluster=cluster)
    except SpecError as exc:
        _user_error(exc)
    for note in prep.dataset.meta.get("notes", []):
        typer.echo(f"warning: {note}", err=True)
    typer.echo(f"ok: {prep.spec.name}: {len(prep.dataset.labels)} rows, {prep.dataset.num_labels} classes")


@app.command()
def plan(spec_file: str = typer.Argument(..., help="Path to a job spec YAML.")):
    """Estimate the wall time of every stage of a job on this machine before running it (a few calibration steps of
    the teacher and of the smallest and largest student; nothing is written), and, for a supernet schedule, the same
    job with per-candidate distillation. `nas run --plan` / `nas submit --plan` store it on the job; `nas status`
    then shows it beside the measured stage times."""
    from nas.pipeline import prepare
    from nas.spec.errors import SpecError
    from nas.spec.job import load_spec

    try:
        spec = load_spec(spec_file)
        prepare(spec)
    except SpecError as exc:
        _user_error(exc)
    _estimate(spec)


@app.command()
def dashboard(port: int = typer.Option(8501, help="Port."),
              host: str = typer.Option("127.0.0.1", help="Address to bind. Anything but loopback needs "
                                                          "$NAS_DASHBOARD_PASSWORD (or Streamlit secrets `password`)."),
              storage: Optional[str] = typer.Option(None, help=STORAGE_HELP)):
    """Start the Streamlit dashboard: jobs, fronts, trials, compare, submit, export (read-only on the store, except
    submissions)."""
    import pathlib

    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("NAS_DASHBOARD_PASSWORD"):
        secrets = pathlib.Path(".streamlit/secrets.toml")
        if not (secrets.is_file() and "password" in secrets.read_text()):
            _user_error(Exception(f"--host: binding to {host} needs a password: set NAS_DASHBOARD_PASSWORD "
                                  "(or `password` in .streamlit/secrets.toml)"))
    store = _store(storage)  # a wrong URL is a clear error here, not a broken page
    store.dispose()
    app_path = pathlib.Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    env = dict(os.environ, NAS_DASHBOARD_HOST=host)
    if storage:
        env["NAS_STORAGE"] = storage
    # exec, not a child: a signal to `nas dashboard` reaches Streamlit itself (no orphaned server left behind)
    os.execve(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.address", host,
                               "--server.port", str(port), "--server.headless", "true",
                               "--browser.gatherUsageStats", "false"], env)


if __name__ == "__main__":
    app()
