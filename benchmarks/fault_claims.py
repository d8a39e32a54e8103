"""Fault scenario 5: two `nas serve` processes drain one queue of jobs; no job may be claimed twice."""

from __future__ import annotations

import pathlib
import time

from fault_common import NAS, SPEC, Processes, job_env, log, submit


# -- 5. two `nas serve` processes, many queued jobs --------------------------------------------------------------------
def double_claims(root: pathlib.Path, n_jobs: int) -> dict:
    """Two services drain one queue. The jobs end fast: their dataset file is removed after they are queued, so each
    child fails at validation (a FAILED job); what is measured is who claimed and ran what."""
    from nas.store import Store

    home = root / "claims"
    url = f"sqlite:///{home / 'nas.db'}"
    env = job_env(home)
    csv = home / "data.csv"
    csv.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(30)))
    spec = SPEC.format(name="claim", trials=1, steps=1, concurrent=1).replace(
        "{name: bbc-news, max_rows: 150}", "{path: %s}" % csv)
    ids = [submit(spec.replace("name: claim", f"name: claim-{i}"), home, url, env) for i in range(n_jobs)]
    csv.unlink()
    procs = Processes()
    store = Store(url)
    try:
        serves = [procs.start(NAS + ["serve", "--storage", url, "--once", "--poll", "0.2", "--heartbeat", "1",
                                     "--stale-after", "60"], env, home / f"serve-{i}.log") for i in range(2)]
        t0 = time.monotonic()
        for p in serves:
            p.wait(900)
        ran: dict[int, list[int]] = {}
        for i in range(2):
            for line in (home / f"serve-{i}.log").read_text().splitlines():
                if line.startswith("job ") and line.endswith("): running"):
                    ran.setdefault(int(line.split()[1]), []).append(i)
        jobs = {j["id"]: j for j in store.list_jobs()}
        doubles = sum(1 for i in ids if len(ran.get(i, [])) > 1 or jobs[i]["claims"] > 1)
        res = {"jobs": n_jobs, "double_claims": doubles, "unclaimed": sum(1 for i in ids if i not in ran),
               "per_service": [sum(1 for v in ran.values() if i in v) for i in range(2)],
               "statuses": sorted({jobs[i]["status"] for i in ids}), "drain_s": round(time.monotonic() - t0, 1)}
        log(f"double claims: {res}")
        return res
    finally:
        procs.close()
        store.dispose()

