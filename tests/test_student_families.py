"""Student families beyond BERT slices (textcnn, bilstm, boe), searched on one front with them, and the transfer corpus.

Unit checks on tiny models built here: each family's forward ignores padding, saves and reloads exactly, and exports
to ONNX with the same logits; the mixed space is sampled family first and evolved without crossing families. Then one
real job (Ray, SQLite, the MiniLM teacher on a BBC slice): a mixed-family search whose students all train on a
teacher-labelled transfer corpus, every family exported in each format and re-scored from raw text; and the corpus
file's bad cases, refused with the field named and nothing written."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers as tr
from conftest import job_environment, real_job

from nas.search.space import MixedSpace, all_shapes, sample_unique, searched_space
from nas.search.strategies import make_strategy
from nas.spec.errors import SpecError
from nas.spec.space import load_search_space
from nas.students import FAMILIES, family_module
from nas.students.arch import Arch, shape_from_key, student_shape
from nas.students.shape import Shape
from nas.students.small import load_small

ARCHES = [Arch.of("textcnn", emb=32, channels=16, kernels=3, mlp=8), Arch.of("bilstm", emb=32, hidden=16, layers=2, mlp=0),
          Arch.of("boe", emb=32, ngrams=2, mlp=16)]


def tiny_source():
    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=500, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=96, num_labels=3)
    return tr.BertForSequenceClassification(cfg).eval()


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 500, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_registry_and_keys():
    assert {"bert", "textcnn", "bilstm", "boe"} <= set(FAMILIES)
    for a in ARCHES:
        assert shape_from_key(a.key) == a and student_shape(a.as_dict()) == a
    assert student_shape({"layers": 1, "hidden": 64, "heads": 2, "ffn": 128}) == Shape(1, 64, 2, 128)
    with pytest.raises(ValueError, match="axes"):
        Arch.of("textcnn", emb=32)


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.family)
def test_family_forward_padding_save_and_onnx(arch, tmp_path):
    from nas.latency.runtimes import export_onnx, onnx_session

    src = tiny_source()
    mod = family_module(arch.family)
    model = mod.extract_subnet(src, arch)
    # the token table starts as the source's, projected: its rows keep the source's geometry (not random)
    emb, base = model.emb.weight.detach(), src.get_input_embeddings().weight.detach()
    sims = torch.nn.functional.cosine_similarity(emb[10:20] @ emb[10:20].T, base[10:20] @ base[10:20].T, dim=1)
    assert sims.mean() > 0.5
    x = padded_batch()
    logits = model(**x).logits
    assert logits.shape == (3, 3)
    cut = {k: v[1:2, :7] for k, v in x.items()}  # row 1 without its padding: the same logits
    assert torch.allclose(model(**cut).logits, logits[1:2], atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    assert torch.equal(load_small(tmp_path / "m")(**x).logits, logits)
    assert mod.count_parameters(model) > 0 and mod.size_mb(model) > 0
    export_onnx(model, x, tmp_path / "m.onnx")
    out = onnx_session(tmp_path / "m.onnx", 1).run(["logits"], {k: v.numpy() for k, v in x.items()})[0]
    assert np.abs(out - logits.detach().numpy()).max() < 1e-4


def test_albert_from_the_source(tmp_path):
    """ALBERT's shared layer is the source's first layer sliced; padding is ignored; it saves as a stock transformers
    model (load_student reads it back) and exports to ONNX with the same logits."""
    from nas.latency.runtimes import export_onnx, onnx_session
    from nas.students import load_student

    src = tiny_source()
    arch = Arch.of("albert", emb=16, hidden=32, heads=2, ffn=64, layers=2)
    model = family_module("albert").extract_subnet(src, arch)
    shared = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    first = src.bert.encoder.layer[0]
    assert torch.equal(shared.attention.query.weight, first.attention.self.query.weight[:32, :32])
    assert torch.equal(shared.ffn.weight, first.intermediate.dense.weight[:64, :32])
    x = padded_batch()
    logits = model(**x).logits
    cut = {k: v[1:2, :7] for k, v in x.items()}
    assert torch.allclose(model(**cut).logits, logits[1:2], atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    assert type(load_student(tmp_path / "m")).__name__ == "AlbertForSequenceClassification"
    assert torch.allclose(load_student(tmp_path / "m")(**x).logits, logits, atol=1e-6)
    export_onnx(model, x, tmp_path / "m.onnx")
    out = onnx_session(tmp_path / "m.onnx", 1).run(["logits"], {k: v.numpy() for k, v in x.items()})[0]
    assert np.abs(out - logits.detach().numpy()).max() < 1e-4
    (tmp_path / "s.yaml").write_text("student: {layers: [1], hidden: [48], heads: [2], ffn: [96]}\nfamilies:\n"
                                     "  albert: {emb: [16], hidden: [64], heads: [2], ffn: [64], layers: [1]}\n")
    with pytest.raises(SpecError, match="larger than the source"):
        load_search_space(str(tmp_path / "s.yaml"), src.config.to_dict())


def test_family_learns_with_the_distillation_loop():
    """A textcnn distilled from a fixed linear 'teacher' on random tokens fits its soft targets (loss falls a lot)."""
    from nas.distill.loop import DistillSettings, distill

    src = tiny_source()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (256, 10), generator=g)
    tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = (ids[:, 0] % 3).long()  # the class is read off the first token
    soft = torch.nn.functional.one_hot(labels, 3).float() * 4
    model = family_module("textcnn").extract_subnet(src, ARCHES[0])
    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(model(**tensors).logits, labels))
    distill(model, tensors, labels, soft, DistillSettings(lr=3e-3, batch_size=32, weight_decay=0.0), 160, seed=0)
    with torch.no_grad():
        after = float(torch.nn.functional.cross_entropy(model.eval()(**tensors).logits, labels))
    assert after < 0.3 * before, (before, after)


SPACE = """
student: {layers: [1], hidden: [64], heads: [2], ffn: [128]}
families:
  textcnn: {emb: [32], channels: [16, 32], kernels: [2], mlp: [0], distill: {lr: 0.003, batch_size: 16}}
  bilstm: {emb: [32], hidden: [16], layers: [1], mlp: [0], distill: {lr: 0.003}}
  boe: {emb: [32], ngrams: [1, 2], mlp: [16], epochs: 6}
  albert: {emb: [32], hidden: [64], heads: [2], ffn: [128], layers: [2]}
"""


def test_mixed_space_is_searched_family_first(tmp_path):
    (tmp_path / "s.yaml").write_text(SPACE)
    space = load_search_space(str(tmp_path / "s.yaml"))
    mixed = searched_space(space)
    assert isinstance(mixed, MixedSpace) and mixed.families == ["bert", "textcnn", "bilstm", "boe", "albert"]
    assert len(all_shapes(mixed)) == 1 + 1 + 2 + 1 + 2
    assert space.distill_for("textcnn").lr == 0.003 and space.distill_for("boe").lr == space.distill.lr
    drawn = sample_unique(mixed, 7, np.random.default_rng(0))
    assert len({s.key for s in drawn}) == 7
    evo = make_strategy("evolution", mixed, 0, population=3)
    rng, seen = np.random.default_rng(1), []
    for _ in range(2):
        for s in evo.ask(3):
            seen.append(s.key)
            evo.tell(s, {"metric": float(rng.random()), "latency_ms": float(rng.random())})
    assert len(seen) == len(set(seen)) == 6
    a, b = Arch.of("textcnn", emb=32, channels=16, kernels=2, mlp=0), Shape(1, 64, 2, 128)
    assert all(evo._cross(a, b) == a for _ in range(20))  # two families never cross


def test_space_errors_name_the_field(tmp_path):
    cases = {
        "textcnn: {emb: [32], chanels: [16], kernels: [2], mlp: [0]}": "search_space.families.textcnn",
        "textcnn: {emb: [0], channels: [16], kernels: [2], mlp: [0]}": "search_space.families.textcnn.emb",
        "cnn: {emb: [32]}": "search_space.families.cnn",
    }
    for body, field in cases.items():
        (tmp_path / "s.yaml").write_text("student: {layers: [1], hidden: [64], heads: [2], ffn: [128]}\n"
                                         f"families:\n  {body}\n")
        with pytest.raises(SpecError) as err:
            load_search_space(str(tmp_path / "s.yaml"))
        assert err.value.field.startswith(field), (body, err.value.field)


JOB = """
name: {name}
teacher: minilm-l6
dataset: {{name: bbc-news, max_rows: 150}}
task: classification
search_space: {space}
search: {{strategy: {strategy}}}
latency: {{device: cpu, batch: 1, seq_len: 32, threads: 1, warmup: 2, min_runs: 5, max_runs: 20}}
budgets: {{trials: 7, epochs: 2, max_seq_len: 32, teacher_epochs: 2}}
transfer: {{path: {corpus}, augment: 1}}
seed: 3
"""


def corpus_file(path: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    words = "the government said the team won a match and the market fell while the film star sang".split()
    path.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(40)) + "\n\n")
    return path


def run_cli(home: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    with job_environment(home):
        return subprocess.run([sys.executable, "-m", "nas.ui.cli", *args], capture_output=True, text=True, timeout=600)


def test_mixed_family_job_with_a_transfer_corpus_and_every_export(tmp_path):
    from nas.results.export import evaluate_export, export_trial
    from nas.results.formats import formats_of, predictor
    from nas.store.records import metric_value

    (tmp_path / "s.yaml").write_text(SPACE)
    spec = JOB.format(name="families", space=tmp_path / "s.yaml", strategy="random", corpus=corpus_file(tmp_path / "c.txt"))
    with real_job(tmp_path, spec, NAS_STORAGE=f"sqlite:///{tmp_path / 'nas.db'}") as j:
        store, job_id = j["store"], j["job_id"]
        students = store.trials(job_id, kind="student")
        assert [t["state"] for t in students] == ["COMPLETE"] * 7
        fams = {student_shape(t["config"]["shape"]).family for t in students}
        assert fams == {"bert", "albert", "textcnn", "bilstm", "boe"}
        boe = [t for t in students if t["config"]["shape"].get("family") == "boe"]
        cnn = [t for t in students if t["config"]["shape"].get("family") == "textcnn"]
        assert all(t["config"]["distill"]["lr"] == 0.003 for t in cnn)
        assert boe[0]["config"]["steps"] > cnn[0]["config"]["steps"]  # boe's own 6 epochs
        for t in students:
            assert metric_value(t, "size_mb", "dev", "final") > 0 and metric_value(t, "speedup", "dev", "final") > 1
        one_each = {t["config"]["shape"]["family"]: t for t in reversed(students) if "family" in t["config"]["shape"]}
        for fam, t in one_each.items():  # every family but bert (tests/test_families.py exports those)
            out = tmp_path / f"export-{t['number']}"
            export_trial(store, job_id, t["number"], str(out))
            assert formats_of(out) == ["hf" if fam == "albert" else "native", "onnx", "int8"]
            for fmt in formats_of(out):
                ev = evaluate_export(out, fmt)
                assert ev["abs_diff"] <= 0.005, (t["config"]["shape"], fmt, ev)
            probs = predictor(out, "int8")(["the election result was announced"])
            assert probs.shape == (1, 5) and abs(float(probs.sum()) - 1) < 1e-4
        r = run_cli(tmp_path, "predict", str(tmp_path / f"export-{boe[0]['number']}"), "a new phone was released")
        assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["label"]
        dashboard_shows_the_families(tmp_path)


def dashboard_shows_the_families(home: pathlib.Path) -> None:
    """The job page marks each family on the front (a marker and a legend entry each) and filters by family; the export
    page offers every format."""
    from streamlit.testing.v1 import AppTest

    app = str(pathlib.Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/job.py").run()
    assert not at.exception, at.exception
    pick = next(m for m in at.multiselect if m.label == "student families")
    assert sorted(pick.options) == ["albert", "bert", "bilstm", "boe", "textcnn"]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t.get("name", "") for t in fig["data"]}
    assert {n.split(" · ")[0] for n in names if " · " in n} >= {"albert", "bert", "bilstm", "boe", "textcnn"}
    symbols = {t["marker"]["symbol"] for t in fig["data"] if t.get("mode") == "markers" and " · " in t.get("name", "")}
    assert {"circle", "pentagon", "square", "diamond", "triangle-up"} <= {s.replace("-open", "") for s in symbols}
    pick.set_value(["boe"]).run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    shown = [t for t in fig["data"] if "front ·" in t.get("name", "") or "dominated ·" in t.get("name", "")]
    assert shown and {t["marker"]["symbol"].replace("-open", "") for t in shown} == {"triangle-up"}  # boe's only
    at.switch_page("views/export.py").run()
    assert not at.exception, at.exception
    assert next(m for m in at.multiselect if m.label == "Formats").options == ["onnx", "int8"]


def tiny_teacher(tokenizer):
    """A 1-layer 32-wide BERT classifier (2 classes) over `tokenizer`'s vocabulary, seeded."""
    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=2)
    return tr.BertForSequenceClassification(cfg).eval()


def test_transfer_corpus_is_labelled_cached_and_resumed(tmp_path, minilm_tokenizer):
    from nas.distill.transfer import label_transfer

    teacher = tiny_teacher(minilm_tokenizer)
    rows = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(23)]
    src = np.full(len(rows), -1)
    whole = label_transfer(teacher, minilm_tokenizer, rows, src, 16, tmp_path / "a.pt", progress=False, chunk=5)
    assert label_transfer(teacher, minilm_tokenizer, rows, src, 16, tmp_path / "b.pt", progress=False, chunk=5,
                          stop_after=2) is None
    assert (tmp_path / "b.pt.partial").is_file() and not (tmp_path / "b.pt").exists()
    resumed = label_transfer(teacher, minilm_tokenizer, rows, src, 16, tmp_path / "b.pt", progress=False, chunk=5)
    assert torch.allclose(resumed["logits"], whole["logits"], atol=1e-6) and resumed["logits"].shape == (23, 2)
    assert not (tmp_path / "b.pt.partial").exists()
    # cached: the file is read back, the teacher is not run again
    again = label_transfer(None, minilm_tokenizer, rows, src, 16, tmp_path / "a.pt", progress=False)
    assert torch.equal(again["logits"], whole["logits"])


def test_transfer_corpus_keeps_the_teachers_pooled_states_and_the_embedding_loss_learns_them(tmp_path,
                                                                                               minilm_tokenizer):
    """`pooled=True`: the labelled set also holds the teacher's final hidden state averaged over each row's real tokens
    (the same forward as its logits, resumed chunk by chunk like them); a student of another width trained on those
    targets through its `embedding_projection` (DistillSettings.embedding_weight) ends closer to them than it starts."""
    from nas.distill.evaluate import predict_logits
    from nas.distill.loop import DistillSettings, distill
    from nas.distill.transfer import label_transfer

    teacher = tiny_teacher(minilm_tokenizer)
    rows = [f"review number {i} was {'good' if i % 2 else 'rather bad ' * (i % 4)}" for i in range(23)]
    src = np.full(len(rows), -1)
    assert label_transfer(teacher, minilm_tokenizer, rows, src, 16, tmp_path / "p.pt", progress=False, chunk=5,
                          stop_after=2, pooled=True) is None
    got = label_transfer(teacher, minilm_tokenizer, rows, src, 16, tmp_path / "p.pt", progress=False, chunk=5,
                         pooled=True)
    assert got["pooled"].shape == (23, 32) and got["pooled"].dtype == torch.float16
    one = minilm_tokenizer([rows[3]], return_tensors="pt")  # unpadded: every token is real
    with torch.no_grad():
        want = teacher(**one, output_hidden_states=True).hidden_states[-1].mean(1)[0]
    assert torch.allclose(got["pooled"][3].float(), want, atol=2e-3)
    plain = label_transfer(teacher, minilm_tokenizer, rows, src, 16, tmp_path / "l.pt", progress=False)
    assert "pooled" not in plain and torch.allclose(plain["logits"], got["logits"], atol=1e-5)

    torch.manual_seed(1)
    student = tr.BertForSequenceClassification(tr.BertConfig(
        vocab_size=minilm_tokenizer.vocab_size, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=48, num_labels=2))
    student.embedding_projection = torch.nn.Linear(24, 32)
    targets = got["pooled"].float()

    def cosine() -> float:
        _, pooled = predict_logits(student, got["tensors"], pooled=True)
        with torch.no_grad():
            return torch.nn.functional.cosine_similarity(student.embedding_projection(pooled.float()), targets).mean()

    before = cosine()
    settings = DistillSettings(lr=3e-3, alpha_soft=0.5, beta_hard=0.0, embedding_weight=1.0, batch_size=8)
    distill(student, got["tensors"], torch.zeros(23, dtype=torch.long), got["logits"], settings, 60,
            hard_mask=torch.zeros(23, dtype=torch.bool), teacher_embeddings=targets)
    assert cosine() > max(0.9, before + 0.1), (before, cosine())
    with pytest.raises(ValueError, match="embedding"):
        del student.embedding_projection
        distill(student, got["tensors"], torch.zeros(23, dtype=torch.long), got["logits"], settings, 1,
                teacher_embeddings=targets)


def test_a_teacher_reading_other_ids_for_the_same_tokens_is_run_through_the_id_map(minilm_tokenizer):
    """nas/teachers/align.py: MiniLM's tokenizer against itself maps every id to itself; against a teacher whose
    vocabulary is the same tokens in another order, the map is that order, and the attention loss through it equals the
    loss against the same teacher reading the student's ids directly (its embedding rows put back in the student's
    order)."""
    from nas.distill.loop import DistillSettings, inner_losses
    from nas.teachers.align import teacher_inputs, token_map

    same, why = token_map(minilm_tokenizer, minilm_tokenizer)
    assert not why and torch.equal(same, torch.arange(len(minilm_tokenizer)))
    teacher = tiny_teacher(minilm_tokenizer)
    student = tiny_teacher(minilm_tokenizer)
    with torch.no_grad():  # another model than the teacher
        for w in student.parameters():
            w.add_(0.2 * torch.randn(w.shape, generator=torch.Generator().manual_seed(w.numel())))
    perm = torch.randperm(len(minilm_tokenizer), generator=torch.Generator().manual_seed(0))  # student id -> teacher id
    shuffled = tiny_teacher(minilm_tokenizer)
    with torch.no_grad():
        shuffled.bert.embeddings.word_embeddings.weight[perm] = teacher.bert.embeddings.word_embeddings.weight
    enc = dict(minilm_tokenizer(["a fine film", "not a fine film at all"], padding=True, return_tensors="pt"))
    assert torch.equal(teacher_inputs(enc, perm)["input_ids"], perm[enc["input_ids"]])
    assert "token_type_ids" not in teacher_inputs(enc, perm)
    settings = DistillSettings(attention_weight=1.0, layer_map="uniform")
    for m in (teacher, student, shuffled):
        m.set_attn_implementation("eager")
    with torch.no_grad():
        out = student(**enc, output_attentions=True)
        direct = inner_losses(out, teacher, enc, settings)
        mapped = inner_losses(out, shuffled, enc, settings, teacher_input_map=perm)
    assert direct > 0 and torch.allclose(direct, mapped, atol=1e-6), (direct, mapped)


@pytest.mark.parametrize("case", ["empty", "binary", "latin1", "no-column", "strategy"])
def test_bad_corpus_exits_2_and_writes_nothing(tmp_path, case):
    (tmp_path / "s.yaml").write_text(SPACE)
    corpus = {"empty": "c.txt", "binary": "c.bin", "latin1": "c.txt", "no-column": "c.csv", "strategy": "c.txt"}[case]
    path = tmp_path / corpus
    if case == "empty":
        path.write_text("\n  \n\n")
    elif case == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    elif case == "latin1":
        path.write_bytes("a fine film\nun caf\u00e9 tr\u00e8s cher\n".encode("latin-1"))
    elif case == "no-column":
        path.write_text("review,score\ngood film,5\n")
    else:
        corpus_file(path)
    strategy = "optuna-nsga2" if case == "strategy" else "random"
    (tmp_path / "job.yaml").write_text(JOB.format(name="bad", space=tmp_path / "s.yaml", strategy=strategy, corpus=path))
    r = run_cli(tmp_path, "run", str(tmp_path / "job.yaml"), "--storage", f"sqlite:///{tmp_path / 'nas.db'}")
    assert r.returncode == 2, r.stderr
    field = {"no-column": "transfer.column", "strategy": "search.strategy"}.get(case, "transfer.path")
    assert field in r.stderr, r.stderr
    if case == "latin1":
        assert "line 2" in r.stderr
    if (tmp_path / "nas.db").exists():
        from nas.store import Store

        assert Store(f"sqlite:///{tmp_path / 'nas.db'}").list_jobs() == []
