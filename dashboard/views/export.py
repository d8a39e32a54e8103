"""Export: pick a front point (or the best under a latency limit) and download its config and model."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
import yaml

from nas.ui.dashboard import data as dd
from nas.ui.dashboard.common import job_picker, load_job, load_jobs, store_or_stop


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
    formats = st.multiselect("Formats", ["onnx", "int8"], default=["onnx", "int8"], key="export_formats",
                             help="Beside the model directory (Hugging Face save_pretrained, or the native format of a "
                                  "textcnn / bilstm / boe student): fp32 ONNX with the tokenizer, and its dynamically "
                                  "quantised int8 copy.")
    if c3.button("Build model zip", key="build_zip"):
        with st.spinner("Exporting (the same code as `nas export`)…"):
            try:
                st.session_state["zip"] = (int(row["trial"]), dd.export_zip(store_or_stop(), job_id, int(row["trial"]),
                                                                            ("hf", *formats)))
            except Exception as exc:
                st.error(str(exc))
    z = st.session_state.get("zip")
    if z and z[0] == int(row["trial"]):
        st.download_button("Download model zip", z[1], f"job{job_id}-trial{z[0]}.zip", "application/zip", key="dl_zip")


export_page()
