"""Job: one job's Pareto front (on each of its latency targets, chosen with a selector, and all targets' fronts compared),
hypervolume over time, trials, parallel coordinates, hyperparameter importance, proxy-vs-final agreement and
fingerprint."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from nas.ui.dashboard import data as dd
from nas.ui.dashboard.common import (
    LIVE_S,
    cached_importance,
    front_figure,
    job_picker,
    load_job,
    load_jobs,
    target_label,
    targets_figure,
)


def pick_target(fronts: list[dict]) -> dict:
    """The front of the latency target chosen in the selector (shown only when the job has several)."""
    if len(fronts) == 1:
        return fronts[0]
    by_name = {f["target"]["name"]: f for f in fronts}
    name = st.selectbox("Latency target", list(by_name), format_func=lambda n: target_label(by_name[n]["target"]),
                        key="latency_target", help="Every front point is measured on each target; the first is the "
                                                   "search objective.")
    return by_name[name]


def compare_targets(fronts: list[dict]) -> None:
    st.subheader("Latency targets compared")
    st.plotly_chart(targets_figure(fronts), width="stretch", key="targets_chart")
    st.dataframe(dd.targets_table(fronts), width="stretch", hide_index=True, key="targets_table")


def what_to_deploy(job_id: int, df, f: dict) -> None:
    """For a latency budget (or a speedup) typed in: the best student, what it keeps, its size, and its export."""
    st.subheader("What to deploy")
    b1, b2 = st.columns(2)
    mode = b1.radio("Budget as", ["p50 latency (ms)", "speedup over the teacher (x)"], horizontal=True, key="deploy_mode")
    t_ms = (f["teacher"] or {}).get("p50_ms") or 10.0
    if mode.startswith("p50"):
        budget = b2.number_input("p50 at most (ms)", min_value=0.001, value=round(t_ms / 5, 3), key="deploy_ms")
        row = dd.best_within(df, budget_ms=budget)
    else:
        budget = b2.number_input("at least (x)", min_value=1.0, value=5.0, step=1.0, key="deploy_x")
        row = dd.best_within(df, speedup=budget)
    if row is None:
        st.info("No completed student meets that budget.")
        return
    st.success(dd.deploy_sentence(row, f["metric"]))
    st.code(f"nas export {job_id} --trial {int(row['trial'])} --out DIR", language="bash")


def stage_table(rows: list[dict]) -> None:
    """Each stage's estimate (when the job was planned) beside the wall time it took."""
    if not rows:
        return
    st.subheader("Stage times")
    st.dataframe([{"stage": r["stage"], "estimate (min)": _min(r["estimate_s"]), "measured (min)": _min(r["measured_s"])}
                  for r in rows], width="stretch", hide_index=True, key="stage_times")


def _min(s: float | None) -> float | None:
    return round(s / 60, 2) if s is not None else None


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
        fronts, df = data["fronts"], data["df"]
        f = pick_target(fronts)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("status", f["job"]["status"])
        c2.metric("students complete", int(((df["kind"] == "student") & (df["state"] == "COMPLETE")).sum()) if len(df) else 0)
        c3.metric("front points", len(f["front"]))
        c4.metric("hypervolume", f"{f['hypervolume_norm']:.3f}" if f.get("hypervolume_norm") is not None else "–",
                  help="Share (0-1) of the region between the majority-class baseline and the teacher (metric) and "
                       "between 0 and the teacher's latency that the front dominates. Raw: "
                       + (f"{f['hypervolume']:.4f} ({f['metric']} x ms)" if f["hypervolume"] is not None else "–"))
        if df.empty:
            st.info("No trials yet.")
            return
        for note in df[(df["kind"] == "teacher") & df["error"].notna()]["error"]:  # the teacher check's finding
            st.warning(f"Teacher: {note}")
        a1, a2 = st.columns(2)
        x = a1.selectbox("x axis", ["speedup", "p50_ms", "p90_ms", "params"], key="x_axis",
                         format_func=lambda v: {"speedup": "speedup over the teacher (x)", "params": "parameters"}.get(v, v))
        y = a2.selectbox("y axis", ["retention", "metric", "test"], key="y_axis",
                         format_func=lambda v: {"metric": "dev metric", "test": "test metric",
                                                "retention": "share of the teacher's metric"}[v])
        shown = dd.target_frame(df, f) if len(fronts) > 1 else df  # students as measured on the chosen target
        shown = dd.with_retention(shown, f["teacher"])
        families = sorted(x for x in shown["family"].dropna().unique()) if "family" in shown else []
        if len(families) > 1:  # several student families on one front: show some of them
            keep = st.multiselect("student families", families, default=families, key="families")
            shown = shown[shown["family"].isin(keep) | (shown["kind"] != "student")]
        st.plotly_chart(front_figure(f, shown, x, y), width="stretch", key="front_chart")
        what_to_deploy(job_id, shown, f)
        for r in f.get("references", []):
            if r["dominated_front_points"]:
                st.warning(f"{r['name']} dominates {r['dominated_front_points']} of {r['front_points']} front points "
                           "(at least as accurate and as fast end to end).")
        if f["teacher"]:
            hv = dd.hv_over_time(shown, f["teacher"]["latency_ms"])
            if len(hv) > 1:
                st.subheader("Hypervolume over time")
                st.plotly_chart(px.line(hv, x="finished_at", y="hypervolume", markers=True, hover_data=["trials"]),
                                width="stretch", key="hv_chart")
        if len(fronts) > 1:
            compare_targets(fronts)
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
        stage_table(data["stages"])
        with st.expander("Device fingerprint of the front's measurements"):
            st.json(f["fingerprint"] or {})
    body()


job_page()
