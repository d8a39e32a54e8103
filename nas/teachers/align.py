"""Whether a teacher and a student initialiser with different tokenizers still cut text into the same tokens, and the
id map between them: then token-level losses (attention maps, nas/distill/losses.py) are defined between the two
models on the student's own rows. all-mpnet-base-v2 and MiniLM-L6 are such a pair: MPNet's vocabulary is BERT's
uncased WordPiece with its own special tokens and ids.

The map sends each student id to the teacher id of the same token string (special tokens by role: [CLS] -> <s>,
[SEP] -> </s>, ...). It is accepted only where it reproduces the teacher's own tokenisation of every probe text."""

from __future__ import annotations

import torch

SPECIAL_ROLES = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token")

# varied English: casing, punctuation, digits, contractions, accents, a long rare word, emoji
PROBES = (
    "A great film, isn't it? Not really: 3 of 10.",
    "The plot is thin, but the performances (especially Ms. O'Neil's) are superb!",
    "Café society, naïveté and déjà vu -- a pretentious mess.",
    "It runs 142 minutes; it feels like 300.",
    "Unbelievably, antidisestablishmentarianism never comes up. 😀",
    "WHY would anyone make this?!",
    "e-mail, co-operate, U.S.A., #1 hit, $5, 50%",
)


def token_map(teacher_tok, student_tok, probes=PROBES) -> tuple[torch.Tensor | None, str]:
    """(a long tensor of the student's vocabulary size: the teacher id of each student id, or None, and a line saying
    why not). None where a probe text tokenises differently once mapped (another segmentation, a token the teacher's
    vocabulary lacks)."""
    vocab = teacher_tok.get_vocab()
    unk = teacher_tok.unk_token_id if teacher_tok.unk_token_id is not None else 0
    out = torch.full((len(student_tok),), unk, dtype=torch.long, device="cpu")
    for token, i in student_tok.get_vocab().items():
        if token in vocab and i < len(out):
            out[i] = vocab[token]
    for role in SPECIAL_ROLES:
        s, t = getattr(student_tok, role + "_id", None), getattr(teacher_tok, role + "_id", None)
        if s is not None and t is not None and s < len(out):
            out[s] = t
    for text in probes:
        want = teacher_tok(text)["input_ids"]
        got = out[torch.as_tensor(student_tok(text)["input_ids"], device="cpu")].tolist()
        if got != want:
            shown = teacher_tok.convert_ids_to_tokens(want)[:12]
            return None, (f"the two tokenizers cut {text!r} differently (teacher: {shown}, student: "
                          f"{student_tok.convert_ids_to_tokens(student_tok(text)['input_ids'])[:12]})")
    return out, ""


def teacher_inputs(inputs: dict[str, torch.Tensor], id_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """The teacher's inputs for a batch of the student's: its ids through `id_map` (on the batch's device), the same
    attention mask (the tokens line up one to one), no token type ids (not every family takes them)."""
    out = {"input_ids": id_map.to(inputs["input_ids"].device)[inputs["input_ids"]]}
    if "attention_mask" in inputs:
        out["attention_mask"] = inputs["attention_mask"]
    return out
