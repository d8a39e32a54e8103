"""What one student trial does, inside a Ray worker: extract the shape from the teacher, distil it, score it on dev,
measure its latency, save it, and write each of those to the store as it happens."""

from __future__ import annotations

import pathlib
import time
import traceback

import torch


def run_student_trial(config: dict) -> dict:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nas.distill import DistillSettings, distill, predict_logits, scores
    from nas.latency.measure import measure_models, settings_from_spec
    from nas.latency.slot import heavy_work
    from nas.store import Store
    from nas.supernet import Shape, count_parameters, extract_subnet
    from nas.teacher import load_teacher

    hf_logging.set_verbosity_error()
    store = Store(config["storage"], migrate=False)
    trial_id = config["trial_id"]
    trial = store.get_trial(trial_id)
    store.start_trial(trial_id)
    torch.set_num_threads(int(config["train_threads"]))
    try:
        tc = trial["config"]
        shape = Shape.from_dict(tc["shape"])
        tensors = torch.load(config["tokens_path"])
        labels = torch.as_tensor(config["labels"])
        teacher_logits = torch.load(config["teacher"]["logits_path"])
        train = torch.as_tensor(config["train_idx"])
        dev = torch.as_tensor(config["dev_idx"])
        teacher = load_teacher(config["teacher"])
        student = extract_subnet(teacher, shape)
        settings = DistillSettings(**tc["distill"])
        last_beat = [time.monotonic()]

        def beat(step: int, loss: float) -> None:
            if time.monotonic() - last_beat[0] > 5:
                store.heartbeat(trial_id)
                last_beat[0] = time.monotonic()

        if trial["number"] in config.get("nan_trial_numbers", ()):
            # fault injection for tests (NAS_INJECT_NAN_TRIALS): poisoned soft targets give a real NaN loss
            teacher_logits = teacher_logits * float("nan")
        with heavy_work():
            info = distill(student, {k: v[train] for k, v in tensors.items()}, labels[train], teacher_logits[train],
                           settings, int(tc["steps"]), seed=int(config["seed"]) + trial["number"], on_step=beat)
        store.add_metric(trial_id, "train_loss", info["final_loss"], "train", "final", step=info["steps"])
        dev_scores = scores(predict_logits(student, {k: v[dev] for k, v in tensors.items()}), labels[dev])
        for name, value in dev_scores.items():
            store.add_metric(trial_id, name, value, "dev", "final", step=info["steps"])
        params = count_parameters(student)
        store.add_metric(trial_id, "params", params, "dev", "final")

        rows = measure_models(store, {shape.key: student}, settings_from_spec(config["latency"]),
                              config["latency"].get("extra_runtimes", ()), reference=teacher)
        for row in rows[shape.key]:
            store.add_latency(trial_id, shape.key, row)
        lat = rows[shape.key][-1]
        if lat.get("speedup"):
            store.add_metric(trial_id, "speedup", lat["speedup"], "dev", "final")

        out = pathlib.Path(config["artefact_dir"]) / f"trial-{trial['number']:04d}" / "model"
        student.config.architectures = ["BertForSequenceClassification"]
        student.save_pretrained(out)
        AutoTokenizer.from_pretrained(config["teacher"]["dir"]).save_pretrained(out)
        store.add_artefact(trial["job_id"], trial_id, "model", str(out))
        store.finish_trial(trial_id, "COMPLETE")
        return {"trial_number": trial["number"], "state": "COMPLETE", **dev_scores, "p50_ms": lat["p50_ms"],
                "train_s": info["train_s"], "params": params}
    except Exception as exc:  # a failing trial is recorded and the job goes on
        reason = f"{type(exc).__name__}: {exc}"
        store.finish_trial(trial_id, "FAILED", error=reason + "\n" + traceback.format_exc(limit=3))
        return {"trial_number": trial["number"], "state": "FAILED", "error": reason}
    finally:
        store.dispose()

