"""How `nas run`, `nas resume` and `nas pareto` print a front: a table with the teacher (and the assistant) on top,
one sentence per front point, the references timed end to end, and the command that exports the winner. Also the
stage times of a job: its estimate (`nas plan`) beside what each stage took."""

from __future__ import annotations

import json

import typer

FRONT_KEYS = ("metric", "latency", "teacher", "assistant", "front", "hypervolume", "fingerprint", "references",
              "student_tokenizer_ms")


def print_front(store, job_id: int, as_json: bool, target: str | None = None) -> None:
    """Every target's front (or `target`'s). JSON: the first one's keys at the top, and `fronts`, one per target."""
    from nas.results.front import all_fronts, front_rows

    fronts = all_fronts(store, job_id) if target is None else [front_rows(store, job_id, target=target)]
    if as_json:
        each = [{"target": f["target"], **{k: f[k] for k in FRONT_KEYS}} for f in fronts]
        typer.echo(json.dumps({**each[0], "fronts": each}, default=str))
        return
    for f in fronts:
        print_one_front(job_id, f, named=len(f["targets"]) > 1)


def print_one_front(job_id: int, f: dict, named: bool) -> None:
    """The table, the sentences, the references and the export line of one target's front."""
    t = f["teacher"]
    fp = f["fingerprint"] or {}
    tg = f["target"]
    on = (f" on target {tg['name']}: {tg['runtime']} {tg['dtype']}, batch {tg['batch']}, seq {tg['seq_len']}"
          if named else "")
    typer.echo(f"\njob {job_id}: Pareto front of dev {f['metric']} vs {f['latency']} latency{on} "
               f"({fp.get('device')}, {fp.get('cpu')}, {fp.get('threads')} threads, torch {fp.get('torch')})")
    typer.echo(f"{'trial':>5}  {'shape (L/H/A/F)':<22} {f['metric']:>9} {'p50 ms':>8} {'p90 ms':>8} {'speedup':>8} {'params':>10} {'MB':>7}")
    if t:  # its p50 from the rounds the students were timed in, where known: the figure the speedups divide; those
        # rounds keep no p90 of the teacher, so its own stage's p90 goes in the note beside its p50, not in the column
        same = t.get("same_round_p50_ms")
        p90 = f"{'-':>8}" if same else f"{t['p90_ms']:>8.3f}"
        typer.echo(f"{'T':>5}  {shape_text(t['shape']):<22} {t['metric']:>9.4f} {same or t['p50_ms']:>8.3f} {p90} "
                   f"{1.0:>7.1f}x {int(t['params']):>10,} {t['size_mb']:>7.1f}  (teacher"
                   + (f"; p50 {t['p50_ms']:.3f} ms, p90 {t['p90_ms']:.3f} ms in its own stage)" if same else ")"))
    a = f.get("assistant")
    if a:
        typer.echo(f"{'A':>5}  {shape_text(a['shape']):<22} {a['metric']:>9.4f} {a['p50_ms']:>8.3f} {a['p90_ms']:>8.3f} "
                   f"{(a['speedup'] or 0):>7.1f}x {int(a['params']):>10,} {a['size_mb']:>7.1f}  (assistant, τ {a['tau']:.4f}, {a['source']})")
    for r in f["front"]:
        typer.echo(f"{r['trial']:>5}  {shape_text(r['shape']):<22} {r['metric']:>9.4f} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} "
                   f"{(r['speedup'] or 0):>7.1f}x {int(r['params']):>10,} {r['size_mb']:>7.1f}  {r['source']}"
                   + (f" (proxy {r['proxy_metric']:.4f})" if r["source"] == "final" and r["proxy_metric"] is not None else "")
                   + ("  BUSY" if r.get("busy") else ""))
    if any(r.get("busy") for r in f["front"]):
        typer.echo("BUSY: measured while the machine was busy (load above its cores): that latency is less reliable")
    n_all = len(f["rows"])
    hv = f"{f['hypervolume']:.4f}" if f["hypervolume"] is not None else "-"
    share = (f"{f['hypervolume_norm']:.3f} of the region between the majority-class baseline and the teacher"
             if f.get("hypervolume_norm") is not None else "-")
    typer.echo(f"{len(f['front'])} of {n_all} completed students on the front; hypervolume {share} (raw {hv}: "
               f"{f['metric']} x ms up to the teacher's latency)")
    for r in f["front"]:
        typer.echo("  " + front_sentence(r, f["metric"]))
    if f["references"]:
        typer.echo(f"\nreferences, timed end to end from raw text (students add {f['student_tokenizer_ms']:.3f} ms of "
                   f"tokenisation to the latencies above):")
        for r in f["references"]:
            typer.echo(f"{'R':>5}  {r['name']:<22} {r['metric']:>9.4f} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f}  "
                       f"test {r['test_metric']:.4f}  ({r['type']})")
        for r in f["references"]:
            if r["dominated_front_points"]:
                typer.echo(f"note: {r['name']} dominates {r['dominated_front_points']} of {r['front_points']} front "
                           f"points (at least as accurate and as fast end to end)")
    if f["front"]:
        best = max(f["front"], key=lambda r: r["metric"])
        typer.echo(f"export the most accurate: nas export {job_id} --trial {best['trial']} --out DIR")


def front_sentence(r: dict, metric: str) -> str:
    """'L2/256/4/1024: 97.4% of the teacher's accuracy at 8.1x its speed, 14.0 MB' (test retention where scored), and,
    for a final kept as the weight average of several seeds' finals, how its members scored alone."""
    from nas.results.front import seeds_text

    keep = r.get("test_retention") if r.get("test_retention") is not None else r.get("retention")
    split = "test" if r.get("test_retention") is not None else "dev"
    what = f"{100 * keep:.1f}% of the teacher's {split} {metric}" if keep is not None else f"{metric} {r['metric']:.4f}"
    speed = f" at {r['speedup']:.1f}x its speed" if r.get("speedup") else ""
    members = r.get("member_test_metrics") or []
    soup = seeds_text(len(members), min(members, default=None), max(members, default=None), metric)
    return f"trial {r['trial']} {shape_text(r['shape'])}: {what}{speed}, {r['size_mb']:.1f} MB{'; ' + soup if soup else ''}"


def shape_text(s: dict | None) -> str:
    """L/H/A/F of a BERT shape; another student family's shape by its key (textcnn-E128-C128-K3-M0)."""
    from nas.students.arch import family_of, student_shape

    s = s or {}
    if family_of(s) != "bert":
        return student_shape(s).key
    return f"{s.get('layers')}/{s.get('hidden')}/{s.get('heads')}/{s.get('ffn')}"


def print_plan(name: str, p: dict) -> None:
    """`nas plan`'s estimate, a line per stage."""
    cached = [k for k, v in (p.get("cached") or {"teacher": p["teacher_cached"]}).items() if v]
    typer.echo(f"{name}: {p['rows']} rows, {p['threads']} threads on this machine's CPU"
               + (f"; cached: {', '.join(cached)}" if cached else ""))
    gpu = (p.get("gpu") or {}).get("stages")
    if gpu:
        n = p["gpu"].get("gpus", 1)
        typer.echo(f"  {'':<22} {'this CPU':>11} {(f'{n} x ' if n > 1 else '') + p['gpu']['device'][:24]:>26}")
    for stage, s in p["stages"].items():
        typer.echo(f"  {stage:<22} {s / 60:7.1f} min" + (f" {gpu[stage] / 60:21.1f} min" if gpu else ""))


def print_stage_times(rows: list[dict]) -> None:
    """Each stage's estimate beside the wall time it took (`nas status`)."""
    if not rows:
        return

    def fmt(s: float | None) -> str:
        return f"{s:8.1f} s" if s is not None else f"{'-':>10}"

    typer.echo(f"  {'stage':<12} {'estimate':>10} {'measured':>10}")
    for r in rows:
        typer.echo(f"  {r['stage']:<12} {fmt(r['estimate_s'])} {fmt(r['measured_s'])}")
