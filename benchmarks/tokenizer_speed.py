"""What `nas.data.FastEncoder` saves: per-text tokenisation time at batch 1 through the transformers wrapper (`encode`)
and through the tokenizer's Rust backend (`FastEncoder`), on Rotten Tomatoes dev texts with the MiniLM tokenizer, in
interleaved rounds through the latency protocol's text timer. Last line of output: one JSON object.

    python benchmarks/tokenizer_speed.py [--seq 64]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=64)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from nas.data import FastEncoder, encode, load_dataset, split_indices
    from nas.latency.measure import MeasureSettings
    from nas.latency.text import measure_text_interleaved
    from nas.spec.job import DatasetRef
    from nas.teachers.load import teacher_path

    tok = AutoTokenizer.from_pretrained(teacher_path("minilm-l6"))
    ds = load_dataset(DatasetRef(name="rotten-tomatoes"), "classification", 0)
    texts = [ds.texts[i] for i in split_indices(ds.labels, 0)["dev"]]
    fast = FastEncoder(tok, args.seq)
    assert fast.fast
    preds = {"wrapper": lambda t: encode(tok, t, args.seq), "fast": fast}
    rows = measure_text_interleaved(preds, texts, MeasureSettings(seq_len=args.seq, threads=2), reference="wrapper")
    print(json.dumps({"tokenizer": "minilm-l6", "seq": args.seq, "batch": 1,
                      "wrapper_p50_ms": round(rows["wrapper"]["p50_ms"], 4), "fast_p50_ms": round(rows["fast"]["p50_ms"], 4),
                      "speedup": round(rows["fast"]["speedup"], 2),
                      "cpu": rows["fast"]["fingerprint"].get("cpu")}))


if __name__ == "__main__":
    main()
