"""Fault scenario 6: hostile input through the installed CLI; every case must be refused cleanly, the store untouched."""

from __future__ import annotations

import hashlib
import json
import pathlib
import sqlite3
import subprocess
import time

from fault_common import NAS, job_env, log


# -- 6. hostile input through the CLI -----------------------------------------------------------------------------------
def table_digest(db: pathlib.Path) -> str:
    con = sqlite3.connect(db)
    h = hashlib.sha256()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in con.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def bad_input_cases(work: pathlib.Path, job_id: int, quick: bool) -> list[tuple[str, list[str], str, dict]]:
    """(id, CLI arguments, the field the message must name, extra environment)."""
    import yaml

    good = {"name": "hostile", "dataset": {"path": str(work / "good.csv")}, "search_space": "tiny",
            "latency": {"threads": 1, "warmup": 0, "min_runs": 5, "max_runs": 5},
            "budgets": {"trials": 1, "steps": 1, "max_seq_len": 16, "teacher_epochs": 0.01}}

    def spec(case: str, edit=None, text: str | None = None) -> str:
        p = work / f"{case}.yaml"
        if text is not None:
            p.write_text(text)
        else:
            d = json.loads(json.dumps(good))
            edit(d)
            p.write_text(yaml.safe_dump(d))
        return str(p)

    def space(case: str, **student) -> str:
        s = {"layers": [1, 2], "hidden": [64, 128], "heads": [2, 4], "ffn": [128, 256], **student}
        p = work / f"{case}-space.yaml"
        p.write_text(yaml.safe_dump({"student": s}))
        return str(p)

    def setk(path: str, value):
        def edit(d):
            *parents, last = path.split(".")
            for k in parents:
                d = d.setdefault(k, {})
            d[last] = value
        return edit

    (work / "empty.csv").write_text("")
    (work / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81name: x\x00")
    (work / "one-class.csv").write_text("text,label\n" + "".join(f"row {i},pos\n" for i in range(20)))
    (work / "data-root").mkdir(exist_ok=True)
    (work / "not-empty").mkdir(exist_ok=True)
    (work / "not-empty" / "keep.txt").write_text("mine")
    lol = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    pwned = work / "pwned"
    url = f"sqlite:///{work / 'home' / 'nas.db'}"
    st = ["--storage", url]
    sub = lambda path: ["submit", path] + st  # noqa: E731 - the service's entry point for specs
    J = str(job_id)
    cases = [
        ("yaml-syntax", sub(spec("syntax", text="name: x\ndataset: {path: a.csv\nbudgets: [\n")), "(spec file)", {}),
        ("yaml-python-tag", sub(spec("tag", text=f"name: !!python/object/apply:os.system ['touch {pwned}']\n")),
         "(spec file)", {}),
        ("yaml-billion-laughs", sub(spec("lol", text=lol + "name: *i\n")), "name", {}),
        ("spec-missing", sub(str(work / "nope.yaml")), "(spec file)", {}),
        ("spec-empty", sub(spec("empty", text="")), "(spec)", {}),
        ("spec-binary", sub(str(work / "binary.yaml")), "(spec file)", {}),
        ("spec-not-mapping", sub(spec("list", text="- name: x\n")), "(spec)", {}),
        ("unknown-key", sub(spec("colour", setk("colour", "red"))), "colour", {}),
        ("unknown-nested-key", sub(spec("trails", setk("budgets.trails", 3))), "budgets.trails", {}),
        ("wrong-type", sub(spec("many", setk("budgets.trials", "many"))), "budgets.trials", {}),
        ("wrong-type-section", sub(spec("latlist", setk("latency", [1, 2]))), "latency", {}),
        ("missing-name", sub(spec("noname", lambda d: d.pop("name"))), "name", {}),
        ("name-too-long", sub(spec("longname", setk("name", "x" * 5000))), "name", {}),
        ("negative-trials", sub(spec("negtrials", setk("budgets.trials", -3))), "budgets.trials", {}),
        ("too-many-trials", sub(spec("bigtrials", setk("budgets.trials", 10**9))), "budgets.trials", {}),
        ("data-fraction-above-1", sub(spec("frac", setk("budgets.data_fraction", 1.5))), "budgets.data_fraction", {}),
        ("dataset-file-missing", sub(spec("nofile", setk("dataset", {"path": str(work / "nope.csv")}))), "dataset.path", {}),
        ("dataset-path-traversal", sub(spec("trav", setk("dataset", {"path": "../../../../etc/passwd"}))),
         "dataset.path", {}),
        ("dataset-outside-data-root", sub(spec("outside", lambda d: None)), "dataset.path",
         {"NAS_DATA_ROOT": str(work / "data-root")}),
        ("dataset-not-a-table", sub(spec("passwd", setk("dataset", {"path": "/etc/passwd"}))), "dataset.path", {}),
        ("dataset-empty-csv", sub(spec("emptycsv", setk("dataset", {"path": str(work / "empty.csv")}))), "dataset.path", {}),
        ("dataset-one-class", sub(spec("oneclass", setk("dataset", {"path": str(work / "one-class.csv")}))),
         "dataset.path", {}),
        ("unknown-named-dataset", sub(spec("imdb", setk("dataset", {"name": "imdb"}))), "dataset", {}),
        ("hidden-not-divisible-by-heads", sub(spec("div", setk("search_space", space("div", hidden=[64, 100], heads=[3])))),
         "search_space.student.hidden", {}),
        ("layers-above-teacher", sub(spec("deep", setk("search_space", space("deep", layers=[2, 8])))),
         "search_space.student.layers", {}),
        ("unknown-search-space", sub(spec("huge", setk("search_space", "huge"))), "search_space", {}),
        ("teacher-dir-missing", sub(spec("noteacher", setk("teacher", str(work / "no-teacher")))), "teacher", {}),
        ("fp16-on-cpu", sub(spec("fp16", setk("latency.dtype", "fp16"))), "latency.dtype", {}),
        ("unknown-runtime", sub(spec("trt", setk("latency.runtime", "tensorrt"))), "latency.runtime", {}),
        ("negative-constraint", sub(spec("negc", setk("constraints.latency_p90_ms", -1))),
         "constraints.latency_p90_ms", {}),
        ("storage-unreachable", ["submit", spec("ok1", lambda d: None), "--storage",
                                 "postgresql+psycopg://nobody@127.0.0.1:1/nas"], "storage", {}),
        ("storage-malformed", ["submit", spec("ok2", lambda d: None), "--storage", "notaurl"], "storage", {}),
        ("storage-dir-missing", ["submit", spec("ok3", lambda d: None), "--storage", f"sqlite:///{work}/no/dir/x.db"],
         "storage", {}),
        ("storage-unknown-dialect", ["jobs", "--storage", "nosuchdb://u@127.0.0.1/x"], "storage", {}),
        ("resume-unknown-job", ["resume", "9999"] + st, "JOB", {}),
        ("cancel-unknown-job", ["cancel", "9999"] + st, "JOB", {}),
        ("status-unknown-job", ["status", "9999"] + st, "JOB", {}),
        ("trials-unknown-job", ["trials", "9999"] + st, "JOB", {}),
        ("pareto-unknown-job", ["pareto", "9999"] + st, "JOB", {}),
        ("job-id-not-a-number", ["resume", "1;DROP TABLE jobs"] + st, "JOB", {}),
        ("export-unknown-job", ["export", "9999", "--trial", "1", "--out", str(work / "x")] + st, "JOB", {}),
        ("export-unknown-trial", ["export", J, "--trial", "999", "--out", str(work / "x")] + st, "--trial", {}),
        ("export-path-traversal", ["export", J, "--trial", "1", "--out", "../../../../tmp/escape"] + st, "--out", {}),
        ("export-outside-export-root", ["export", J, "--trial", "1", "--out", "/tmp/nas-escape"] + st, "--out",
         {"NAS_EXPORT_ROOT": str(work / "exports")}),
        ("export-into-non-empty-dir", ["export", J, "--trial", "1", "--out", str(work / "not-empty")] + st, "--out", {}),
        ("run-export-dir-traversal", ["run", spec("ok4", lambda d: None), "--export-dir", "../../x"] + st,
         "--export-dir", {}),
        ("run-bad-ray-address", ["run", spec("ok5", lambda d: None), "--address", "not-an-address"] + st, "--address", {}),
        ("resume-unreachable-ray", ["resume", J, "--address", "127.0.0.1:1"] + st, "--address", {}),
        ("serve-negative-poll", ["serve", "--poll", "-1"] + st, "--poll", {}),
        ("serve-stale-below-heartbeat", ["serve", "--heartbeat", "10", "--stale-after", "5"] + st, "--stale-after", {}),
        ("dashboard-open-without-password", ["dashboard", "--host", "0.0.0.0"] + st, "--host",
         {"NAS_DASHBOARD_PASSWORD": ""}),
    ]
    return cases[:30] if quick else cases


def bad_inputs(root: pathlib.Path, quick: bool) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from nas.store import Store

    work = root / "bad"
    home = work / "home"
    env = job_env(home)
    (work / "good.csv").write_text("text,label\n" + "".join(f"a review, number {i},{('neg', 'pos', 'meh')[i % 3]}\n"
                                                             for i in range(30)))
    db = home / "nas.db"
    store = Store(f"sqlite:///{db}")  # a store that already holds a job with a finished trial and a saved model
    job_id = store.create_job("existing", {"objectives": {"metric": "accuracy", "latency": "p50"}}, status="COMPLETE")
    t = store.add_trial(job_id, "student", {"shape": {"layers": 1, "hidden": 64, "heads": 2, "ffn": 128}})
    store.start_trial(t["id"])
    store.add_metric(t["id"], "accuracy", 0.5, "dev", "final")
    (home / "model").mkdir(parents=True, exist_ok=True)
    (home / "model" / "config.json").write_text("{}")
    store.add_artefact(job_id, t["id"], "model", str(home / "model"))
    store.finish_trial(t["id"], "COMPLETE")
    store.dispose()
    cases = bad_input_cases(work, job_id, quick)
    before = table_digest(db)
    files_before = sorted(str(p) for p in home.rglob("*") if "locks" not in p.parts)

    def one(case):
        cid, argv, field, extra = case
        t0 = time.monotonic()
        try:
            r = subprocess.run(NAS + argv, env={**env, **extra}, capture_output=True, text=True, timeout=120, cwd=work)
            rc, out, err = r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = "timeout", str(exc.stdout or ""), str(exc.stderr or "")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        one_line = len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and len(lines[0]) > len(field) + 15
        usage = any(f"'{field}'" in ln or f"'{field.upper()}'" in ln for ln in lines) and "Usage:" in err
        problems = []
        if rc != 2:
            problems.append(f"exit {rc}")
        if "Traceback" in out + err:
            problems.append("traceback")
        if not (one_line or usage):
            problems.append(f"message does not start 'error: {field}: ' ({' | '.join(lines[-2:])[:300]})")
        return {"id": cid, "clean": not problems, "problems": problems, "s": round(time.monotonic() - t0, 1),
                "message": (lines[0] if lines else "")[:200]}

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, cases))
    changed = table_digest(db) != before
    files_after = sorted(str(p) for p in home.rglob("*") if "locks" not in p.parts)
    new_files = sorted(set(files_after) - set(files_before) - {str(db) + "-wal", str(db) + "-shm"})
    for r in results:
        if changed or new_files:
            r["problems"].append("store or NAS_HOME changed")
            r["clean"] = False
    if (work / "pwned").exists():
        results[[r["id"] for r in results].index("yaml-python-tag")]["clean"] = False
    for r in results:
        log(f"bad input {r['id']:<32} {'clean' if r['clean'] else 'NOT CLEAN ' + '; '.join(r['problems'])}  {r['message'][:110]}")
    res = {"tried": len(results), "clean": sum(r["clean"] for r in results), "store_changed": changed,
           "new_files": new_files[:5], "not_clean": [f"{r['id']}: {'; '.join(r['problems'])}" for r in results if not r["clean"]]}
    return res

