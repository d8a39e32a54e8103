"""What every dashboard page shares: the access gate, the read-only store, cached loaders, the job picker and the
front figures (one latency target's, and every target's front together). The pages themselves are the scripts in
dashboard/views/ (`dashboard/app.py` is the entry point).

Started by `nas dashboard` (127.0.0.1 by default). It reads the store through a read-only connection (SQLite mode=ro,
PostgreSQL read-only transactions), so it never takes a write lock on a running job's database; the submit page alone
writes, one row per submitted job. Bound to anything but loopback, it asks for the password in $NAS_DASHBOARD_PASSWORD
(or Streamlit secrets `password`).
"""

from __future__ import annotations

import hmac
import os

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from nas.results.front import all_fronts
from nas.search.constraints import violation
from nas.store import Store
from nas.store.records import stage_times
from nas.ui.dashboard import data as dd

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
    """The job's trials as a frame, the front of its first latency target (the search objective) and every target's."""
    store = store_or_stop()
    trials = store.trials(job_id)
    fronts = all_fronts(store, job_id, trials)
    df = dd.trial_frame(trials, fronts[0]["metric"])
    return {"front": fronts[0], "fronts": fronts, "df": df, "stages": stage_times(fronts[0]["job"], trials)}


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


FAMILY_SYMBOLS = {"bert": "circle", "albert": "pentagon", "textcnn": "square", "bilstm": "diamond", "boe": "triangle-up"}  # marker per family


def front_figure(f: dict, df: pd.DataFrame, x: str, y: str) -> go.Figure:
    """The job's students on (x, y) with their front among the points within the job's constraints (a point over a
    limit is drawn as such and never on the front), the teacher, the assistant, references and the budget's line."""
    cons = ((f.get("job") or {}).get("spec") or {}).get("constraints") or {}
    students = df[(df["kind"] == "student") & (df["state"] == "COMPLETE") & df[x].notna() & df[y].notna()].copy()
    cols = [c for c in ("p50_ms", "p90_ms", "speedup") if c in students]
    inside = [violation(r, cons) == 0.0 for r in students[cols].to_dict("records")]
    students["on front"] = False
    if any(inside):
        students.loc[inside, "on front"] = dd.front_mask(students[inside], x, y)
    students["where"] = ["front" if on else "dominated" if ok else "over the limits"
                         for on, ok in zip(students["on front"], inside)]
    fig = go.Figure()
    if "family" not in students:
        students["family"], students["shape"] = "bert", None
    several = students["family"].nunique() > 1  # the family in the legend only where there is more than one
    for (fam, where, source), part in students.groupby(["family", "where", "source"]):
        symbol, on = FAMILY_SYMBOLS.get(fam, "x"), where == "front"
        fig.add_trace(go.Scatter(
            x=part[x], y=part[y], mode="markers", name=(f"{fam} · " if several else "") + f"{where} · {source}",
            marker={"symbol": symbol if source == "final" else symbol + "-open", "size": 9 if on else 6,
                    "opacity": 1.0 if on else 0.3},
            error_x={"type": "data", "symmetric": False, "array": (part["p90_ms"] - part["p50_ms"]).clip(lower=0),
                     "arrayminus": [0] * len(part), "thickness": 1} if x == "p50_ms" else None,
            customdata=part[["trial", "shape", "p50_ms", "p90_ms", "lr"]].to_numpy(),
            hovertemplate="trial %{customdata[0]}<br>%{customdata[1]}<br>p50 %{customdata[2]:.3f} ms · p90 "
                          "%{customdata[3]:.3f} ms<br>lr %{customdata[4]}<br>" + y + " %{y:.4f}<extra></extra>"))
    if len(students):
        fr = students[students["on front"]].sort_values(x)
        fig.add_trace(go.Scatter(x=fr[x], y=fr[y], mode="lines", line={"shape": "vh" if x == "speedup" else "hv", "width": 1}, name="front",
                                 hoverinfo="skip"))
    t = f.get("teacher")
    tm = (t or {}).get("metric")

    def px(r):  # a point's x: its latency, size, or speedup over the teacher
        return r.get("speedup") or (1.0 if r is t else None) if x == "speedup" else r[x]

    def py(r):  # its y: dev or test metric, or the dev metric as a share of the teacher's
        if y == "retention":
            return r["metric"] / tm if tm and r.get("metric") is not None else None
        return r["metric"] if y == "metric" else r["test_metric"]

    if t:
        fig.add_trace(go.Scatter(x=[px(t)], y=[py(t)], mode="markers+text", marker={"symbol": "star", "size": 16},
                                 text=["teacher"], textposition="top center", name="teacher"))
    a = f.get("assistant")
    if a:
        fig.add_trace(go.Scatter(x=[px(a)], y=[py(a)], mode="markers+text", marker={"symbol": "diamond", "size": 13},
                                 text=["assistant"], textposition="top center", name=f"assistant (τ {a['tau']:.3f})"))
    refs = [r for r in f.get("references", []) if r["name"] != "teacher" and x in ("p50_ms", "p90_ms")]
    if refs:
        fig.add_trace(go.Scatter(x=[px(r) for r in refs], y=[py(r) for r in refs], mode="markers+text",
                                 marker={"symbol": "x", "size": 12}, text=[r["name"] for r in refs],
                                 textposition="bottom center", name="references (end to end)"))
    titles = {"metric": f"{f['metric']} (dev)", "test": f"{f['metric']} (test)",
              "retention": f"share of the teacher's dev {f['metric']}"}
    fig.update_layout(xaxis_title={"speedup": "speedup over the teacher (x, same rounds)"}.get(x, x),
                      yaxis_title=titles[y], height=480, margin={"t": 30}, legend={"orientation": "h"})
    for at, label in budget_lines(cons, x, t):
        fig.add_vline(x=at, line={"dash": "dot", "width": 1}, annotation_text=label, annotation_position="top")
    if x in ("p50_ms", "p90_ms", "speedup"):
        fig.update_xaxes(type="log")
    if y == "retention":
        fig.update_yaxes(tickformat=".0%")
    return fig


def budget_lines(cons: dict, x: str, teacher: dict | None) -> list[tuple[float, str]]:
    """Where the job's limits fall on the x axis (x, label): min_speedup on the speedup axis, and on a latency axis
    its own limit, or the p50 min_speedup allows against the teacher's p50 in its students' rounds."""
    out = []
    if x == "speedup" and cons.get("min_speedup"):
        out.append((cons["min_speedup"], f"budget {cons['min_speedup']:g}x"))
    if x in ("p50_ms", "p90_ms") and cons.get(f"latency_{x}"):
        out.append((cons[f"latency_{x}"], f"limit {cons[f'latency_{x}']:g} ms"))
    t_ms = (teacher or {}).get("same_round_p50_ms") or (teacher or {}).get("p50_ms")
    if x == "p50_ms" and cons.get("min_speedup") and t_ms:
        out.append((t_ms / cons["min_speedup"], f"budget {cons['min_speedup']:g}x"))
    return out


def target_label(t: dict) -> str:
    return (f"{t['name']} · {t['device']} {t['runtime']} {t['dtype']}, batch {t['batch']}, seq {t['seq_len']}"
            + (f", {t['threads']} threads" if t["device"] != "cuda" else ""))


def targets_figure(fronts: list[dict]) -> go.Figure:
    """Every latency target's front (and its teacher) on one figure: x is each target's own measured latency."""
    fig = go.Figure()
    for f in fronts:
        name, pts, t = f["target"]["name"], f["front"], f["teacher"]
        fig.add_trace(go.Scatter(
            x=[r["latency_ms"] for r in pts], y=[r["metric"] for r in pts], mode="lines+markers", line={"shape": "hv"},
            name=f"front · {name}", customdata=[[r["trial"], r["speedup"] or 0] for r in pts],
            hovertemplate="trial %{customdata[0]}<br>%{x:.3f} ms · %{customdata[1]:.1f}x the teacher<br>%{y:.4f}"
                          f"<extra>{name}</extra>"))
        if t:
            fig.add_trace(go.Scatter(x=[t["latency_ms"]], y=[t["metric"]], mode="markers", name=f"teacher · {name}",
                                     marker={"symbol": "star", "size": 14}))
    f0 = fronts[0]
    fig.update_layout(xaxis_title=f"{f0['latency']} ms on each target", yaxis_title=f"{f0['metric']} (dev)", height=420,
                      margin={"t": 30}, legend={"orientation": "h"})
    fig.update_xaxes(type="log")
    return fig
