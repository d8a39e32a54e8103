"""The dashboard's pages (Streamlit code; `dashboard/app.py` is the entry point): jobs, a job's Pareto front and trials, comparison of jobs, job submission, export of winners.

Started by `nas dashboard` (127.0.0.1 by default). It reads the store through a read-only connection (SQLite mode=ro,
PostgreSQL read-only transactions), so it never takes a write lock on a running job's database; the submit page alone
writes, one row per submitted job. Bound to anything but loopback, it asks for the password in $NAS_DASHBOARD_PASSWORD
(or Streamlit secrets `password`).
"""

from __future__ import annotations

import hmac
import json
import os

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import yaml

from nas import dashboard_data as dd
from nas.pipeline import front_rows
from nas.store import Store

URL = os.environ.get("NAS_STORAGE") or None
HOST = os.environ.get("NAS_DASHBOARD_HOST", "127.0.0.1")
LOOPBACK = HOST in ("127.0.0.1", "localhost", "::1")
LIVE_S = 5


def password() -> str | None:
    pw = os.environ.get("NAS_DASHBOARD_PASSWORD")
    if pw:
        return pw
    try:
        return st.secrets.get("password")
    except Exception:
        return None


def gate() -> bool:
    """Off loopback a password is required; on loopback the page is open (and says so)."""
    if LOOPBACK:
        return True
    expected = password()
    if not expected:
        st.error(f"This dashboard is bound to {HOST} but no password is set: set NAS_DASHBOARD_PASSWORD or "
                 "Streamlit secrets `password`. Nothing is shown.")
        return False
    if st.session_state.get("authed"):
        return True
    st.info(f"Bound to {HOST}: a password is required.")
    given = st.text_input("Password", type="password")
    if given and hmac.compare_digest(given, expected):
        st.session_state["authed"] = True
        st.rerun()
    elif given:
        st.error("Wrong password.")
    return False


@st.cache_resource
def reader() -> Store:
    return Store(URL, migrate=False, read_only=True)


def store_or_stop() -> Store:
    try:
        return reader()
    except Exception as exc:
        st.error(f"Cannot open the store: {exc}")
        st.info("Run a job first (`nas run examples/bbc_quick.yaml`) or point $NAS_STORAGE at a database.")
        st.stop()


@st.cache_data(ttl=LIVE_S, show_spinner=False)
def load_jobs() -> pd.DataFrame:
    return dd.jobs_table(store_or_stop())


@st.cache_data(ttl=LIVE_S, show_spinner=False)
def load_job(job_id: int) -> dict:
    store = store_or_stop()
    trials = store.trials(job_id)
    f = front_rows(store, job_id, trials)
    df = dd.trial_frame(trials, f["metric"])
    return {"front": f, "df": df}


@st.cache_data(ttl=60, show_spinner=False)
def cached_importance(job_id: int, n: int, _done: pd.DataFrame) -> pd.Series:
    """Importances change only as trials finish: keyed by the job and its number of completed students."""
    return dd.importance(_done)


def job_picker(jobs: pd.DataFrame, key: str) -> int | None:
    if jobs.empty:
        st.info("No jobs yet. Run `nas run examples/bbc_quick.yaml`, or submit one on the Submit page.")
        return None
    ids = jobs["id"].tolist()
    wanted = st.query_params.get("job")
    default = ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in ids else len(ids) - 1
    labels = {r.id: f"{r.id} · {r.name} ({r.status})" for r in jobs.itertuples()}
    job_id = st.selectbox("Job", ids, index=default, format_func=lambda i: labels[i], key=key)
    st.query_params["job"] = str(job_id)
    return job_id


# -- pages ------------------------------------------------------------------------------------------------------------
def jobs_page():
    st.title("Jobs")
    live = st.toggle("Live updates", value=True, key="jobs_live")

    @st.fragment(run_every=LIVE_S if live else None)
    def table():
        with st.spinner("Loading jobs…"):
            jobs = load_jobs()
        if jobs.empty:
            st.info("No jobs yet. Run `nas run examples/bbc_quick.yaml`, or submit one on the Submit page.")
            return
        st.dataframe(jobs, width="stretch", hide_index=True,
                     column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
                                    "best dev": st.column_config.NumberColumn(format="%.4f")})
        queued = jobs[jobs["status"] == "QUEUED"]
        if not queued.empty:
            st.caption(f"{len(queued)} queued job(s): nothing runs them until a job service picks them up; "
                       f"run one here with `nas resume {int(queued['id'].iloc[0])}`.")
    table()


def front_figure(f: dict, df: pd.DataFrame, x: str, y: str) -> go.Figure:
    students = df[(df["kind"] == "student") & (df["state"] == "COMPLETE") & df[x].notna() & df[y].notna()].copy()
    students["on front"] = dd.front_mask(students, x, y) if len(students) else []
    fig = go.Figure()
    for (on, source), part in students.groupby(["on front", "source"]):
        fig.add_trace(go.Scatter(
            x=part[x], y=part[y], mode="markers", name=f"{'front' if on else 'dominated'} · {source}",
            marker={"symbol": "circle" if source == "final" else "circle-open", "size": 9 if on else 6,
                    "opacity": 1.0 if on else 0.3},
            error_x={"type": "data", "symmetric": False, "array": (part["p90_ms"] - part["p50_ms"]).clip(lower=0),
                     "arrayminus": [0] * len(part), "thickness": 1} if x == "p50_ms" else None,
            customdata=part[["trial", "layers", "hidden", "heads", "ffn", "p50_ms", "p90_ms", "lr"]].to_numpy(),
            hovertemplate="trial %{customdata[0]}<br>L%{customdata[1]} H%{customdata[2]} A%{customdata[3]} "
                          "F%{customdata[4]}<br>p50 %{customdata[5]:.3f} ms · p90 %{customdata[6]:.3f} ms"
                          "<br>lr %{customdata[7]}<br>" + y + " %{y:.4f}<extra></extra>"))
    if len(students):
        fr = students[students["on front"]].sort_values(x)
        fig.add_trace(go.Scatter(x=fr[x], y=fr[y], mode="lines", line={"shape": "hv", "width": 1}, name="front",
                                 hoverinfo="skip"))
    t = f.get("teacher")
    key = {"p50_ms": "p50_ms", "p90_ms": "p90_ms", "params": "params"}[x]
    if t:
        fig.add_trace(go.Scatter(x=[t[key]], y=[t["metric"] if y == "metric" else t["test_metric"]], mode="markers+text",
                                 marker={"symbol": "star", "size": 16}, text=["teacher"], textposition="top center",
                                 name="teacher"))
    a = f.get("assistant")
    if a:
        fig.add_trace(go.Scatter(x=[a[key]], y=[a["metric"] if y == "metric" else a["test_metric"]], mode="markers+text",
                                 marker={"symbol": "diamond", "size": 13}, text=["assistant"], textposition="top center",
                                 name=f"assistant (τ {a['tau']:.3f})"))
    refs = [r for r in f.get("references", []) if r["name"] != "teacher" and key in ("p50_ms", "p90_ms")]
    if refs:
        fig.add_trace(go.Scatter(x=[r[key] for r in refs], y=[r["metric"] if y == "metric" else r["test_metric"] for r in refs],
                                 mode="markers+text", marker={"symbol": "x", "size": 12}, text=[r["name"] for r in refs],
                                 textposition="bottom center", name="references (end to end)"))
    fig.update_layout(xaxis_title=x, yaxis_title=f"{f['metric']} ({'dev' if y == 'metric' else 'test'})",
                      height=480, margin={"t": 30}, legend={"orientation": "h"})
    if x in ("p50_ms", "p90_ms"):
        fig.update_xaxes(type="log")
    return fig


def job_page():
    st.title("Job")
    jobs = load_jobs()
    job_id = job_picker(jobs, "job_pick")
    if job_id is None:
        return
    status = jobs.set_index("id").loc[job_id, "status"]
    live = st.toggle("Live updates", value=status in ("RUNNING", "QUEUED"), key="job_live")

    @st.fragment(run_every=LIVE_S if live else None)
    def body():
        with st.spinner("Loading trials…"):
            data = load_job(job_id)
        f, df = data["front"], data["df"]
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("status", f["job"]["status"])
        c2.metric("students complete", int(((df["kind"] == "student") & (df["state"] == "COMPLETE")).sum()) if len(df) else 0)
        c3.metric("front points", len(f["front"]))
        c4.metric("hypervolume", f"{f['hypervolume']:.4f}" if f["hypervolume"] is not None else "–")
        if df.empty:
            st.info("No trials yet.")
            return
        a1, a2 = st.columns(2)
        x = a1.selectbox("x axis (latency or size)", ["p50_ms", "p90_ms", "params"], key="x_axis")
        y = a2.selectbox("y axis", ["metric", "test"], format_func=lambda v: {"metric": "dev metric", "test": "test metric"}[v],
                         key="y_axis")
        st.plotly_chart(front_figure(f, df, x, y), width="stretch", key="front_chart")
        for r in f.get("references", []):
            if r["dominated_front_points"]:
                st.warning(f"{r['name']} dominates {r['dominated_front_points']} of {r['front_points']} front points "
                           "(at least as accurate and as fast end to end).")
        if f["teacher"]:
            hv = dd.hv_over_time(df, f["teacher"]["latency_ms"])
            if len(hv) > 1:
                st.subheader("Hypervolume over time")
                st.plotly_chart(px.line(hv, x="finished_at", y="hypervolume", markers=True, hover_data=["trials"]),
                                width="stretch", key="hv_chart")
        st.subheader("Trials")
        k1, k2 = st.columns(2)
        kinds = k1.multiselect("kind", sorted(df["kind"].unique()), default=sorted(df["kind"].unique()), key="kinds")
        states = k2.multiselect("state", sorted(df["state"].unique()), default=sorted(df["state"].unique()), key="states")
        view = df[df["kind"].isin(kinds) & df["state"].isin(states)]
        st.dataframe(view, width="stretch", hide_index=True)
        st.download_button("Download CSV", lambda: view.to_csv(index=False).encode(), f"job-{job_id}-trials.csv",
                           "text/csv", key="csv")  # built when clicked, not on every rerun
        done = df[(df["kind"] == "student") & df["metric"].notna()]
        dims = [c for c in (*dd.SHAPE_COLS, "lr", "p50_ms", "metric") if c in done and done[c].notna().all() and len(done)]
        if len(done) >= 2 and dims:
            st.subheader("Parallel coordinates")
            st.plotly_chart(px.parallel_coordinates(done, dimensions=dims, color="metric"), width="stretch", key="parcoords")
        imp = cached_importance(job_id, len(done), done)
        if not imp.empty:
            st.subheader("What explains the metric (random-forest importance)")
            st.bar_chart(imp)
        ra = dd.rank_agreement(df)
        st.caption(f"Proxy vs final rank agreement: Kendall τ = {ra['kendall_tau']:.3f} over {ra['n']} shapes"
                   if ra["kendall_tau"] is not None else f"Proxy vs final rank agreement: {ra['n']} shapes have both (< 3).")
        with st.expander("Device fingerprint of the front's measurements"):
            st.json(f["fingerprint"] or {})
    body()


def compare_page():
    st.title("Compare jobs")
    jobs = load_jobs()
    if jobs.empty:
        st.info("No jobs yet.")
        return
    labels = {r.id: f"{r.id} · {r.name}" for r in jobs.itertuples()}
    chosen = st.multiselect("Jobs", jobs["id"].tolist(), default=jobs["id"].tolist()[-2:], format_func=lambda i: labels[i])
    rows = []
    for job_id in chosen:
        f = load_job(job_id)["front"]
        fp = (f["fingerprint"] or {})
        for r in f["front"]:
            rows.append({"job": labels[job_id], "fingerprint": f"{fp.get('cpu')} · {fp.get('threads')} thr",
                         "p50_ms": r["p50_ms"], "metric": r["metric"], "trial": r["trial"]})
    if not rows:
        st.info("The chosen jobs have no front yet.")
        return
    data = pd.DataFrame(rows)
    groups = data["fingerprint"].unique()
    if len(groups) > 1:
        st.warning("These fronts were measured on different machines or settings: they are shown in separate plots.")
    for g in groups:
        part = data[data["fingerprint"] == g].sort_values("p50_ms")
        fig = px.line(part, x="p50_ms", y="metric", color="job", markers=True, line_shape="hv", hover_data=["trial"],
                      log_x=True, title=f"measured on {g}")
        st.plotly_chart(fig, width="stretch", key=f"cmp-{g}")


def submit_page():
    st.title("Submit a job")
    st.caption("The spec is validated with the same code as `nas validate` (dataset, teacher and search space included).")
    up = st.file_uploader("Spec file (YAML)", type=["yaml", "yml"])
    text = st.text_area("…or paste a spec", value=up.getvalue().decode() if up else "", height=260, key="spec_text")
    c1, c2 = st.columns(2)
    validate = c1.button("Validate", key="validate")
    enqueue = c2.button("Enqueue", key="enqueue", type="primary")
    if validate or enqueue:
        spec, error = dd.validate_spec_text(text)
        if error:
            st.error(error)
            return
        st.success(f"valid: {spec.name}")
        if enqueue:
            job_id = dd.enqueue_job(URL, spec)
            load_jobs.clear()
            st.success(f"job {job_id} queued. Until a job service picks it up, run it with `nas resume {job_id}`.")


def export_page():
    st.title("Export a winner")
    jobs = load_jobs()
    job_id = job_picker(jobs, "export_pick")
    if job_id is None:
        return
    data = load_job(job_id)
    f, df = data["front"], data["df"]
    mode = st.radio("Choose by", ["a front point", "a latency constraint"], horizontal=True, key="export_mode")
    row = None
    if mode == "a front point":
        if not f["front"]:
            st.info("No front yet.")
            return
        opts = {r["trial"]: f"trial {r['trial']} · {r['metric']:.4f} · p50 {r['p50_ms']:.3f} ms" for r in f["front"]}
        number = st.selectbox("Front point", list(opts), format_func=lambda n: opts[n], key="export_trial")
        row = df[df["trial"] == number].iloc[0]
    else:
        limit = st.number_input("p90 at most (ms)", min_value=0.01, value=5.0, step=0.5, key="export_limit")
        row = dd.pick_by_constraint(df, limit)
        if row is None:
            st.warning(f"No completed student has p90 ≤ {limit} ms.")
            return
        st.write(f"Best with p90 ≤ {limit} ms: trial {int(row['trial'])} ({row['metric']:.4f}, p90 {row['p90_ms']:.3f} ms)")
    config = {k: (None if pd.isna(v) else v) for k, v in row.to_dict().items() if k != "finished_at"}
    st.json(config)
    c1, c2, c3 = st.columns(3)
    c1.download_button("config.yaml", yaml.safe_dump(json.loads(json.dumps(config, default=str))),
                       f"job{job_id}-trial{int(row['trial'])}.yaml", key="dl_yaml")
    c2.download_button("config.json", json.dumps(config, default=str, indent=2), f"job{job_id}-trial{int(row['trial'])}.json",
                       key="dl_json")
    if c3.button("Build model zip", key="build_zip"):
        with st.spinner("Exporting (the same code as `nas export`)…"):
            try:
                st.session_state["zip"] = (int(row["trial"]), dd.export_zip(store_or_stop(), job_id, int(row["trial"])))
            except Exception as exc:
                st.error(str(exc))
    z = st.session_state.get("zip")
    if z and z[0] == int(row["trial"]):
        st.download_button("Download model zip", z[1], f"job{job_id}-trial{z[0]}.zip", "application/zip", key="dl_zip")

