"""How a teacher is trained for the task, and how a student initialiser is distilled from it: `fine_tune` and what it
needs (the step counts, the pooled-state targets, the teacher run on each batch). nas/teachers/load.py caches the
results; its names for these are re-exported there."""

from __future__ import annotations

import pathlib

import torch
from transformers import AutoTokenizer

from nas.compute import Compute, on_host
from nas.distill.loop import DistillSettings, distill, steps_for
from nas.distill.resume import TrainCheckpoint
from nas.teachers import load_pretrained


MIN_TEACHER_STEPS = 60  # fine-tuning takes at least this many steps whatever the data size (teacher_epochs > 0)
TEACHER_BATCH = 32
INIT_LR = 1e-4  # the student initialiser's distillation (budgets.student_init_lr); also the teacher's fine-tuning
INIT_SOFT_LOSS = "soft_kl"  # its soft loss on the teacher's logits (budgets.student_init_soft_loss)


def teacher_steps(n_train: int, epochs: float) -> int:
    """Fine-tuning steps: `epochs` over the train rows, at least MIN_TEACHER_STEPS (a few hundred rows at 3 epochs
    gave a teacher that never left the majority class); 0 epochs: none (the head stays as initialised)."""
    if epochs <= 0:
        return 0
    return max(MIN_TEACHER_STEPS, steps_for(n_train, TEACHER_BATCH, epochs, None))


def fine_tune(model, tensors: dict, labels: torch.Tensor, splits: dict, num_labels: int, seed: int, epochs: float,
              log, compute: Compute, soft_from: str | None, metric: str, transfer: dict | None = None,
              checkpoint: pathlib.Path | None = None, embedding: float = 0.0, attention: float = 0.0,
              lr: float = INIT_LR, soft_loss: str = INIT_SOFT_LOSS, hidden: float = 0.0,
              length_groups: int = 0) -> str | None:
    """Train the teacher on the train rows (or distil the student initialiser from `soft_from`'s logits), with a
    progress bar, stopping early on dev (returns the line saying which step it kept, or None where it does not apply);
    fine-tuning on labels weights skewed classes. `transfer` (with `soft_from`): teacher-labelled rows in the model's
    tokens (nas/distill/augment.py's transfer set) learnt beside the train rows from the soft targets alone; an epoch
    is then one pass over both. `checkpoint`: the file the training saves its state to as it goes (every
    nas/distill/resume.py EVERY_S) and continues from when a killed run is started again (the caller removes it once
    the result is cached). `embedding` > 0 (with `soft_from`): a linear projection of the model's mean-pooled final
    hidden state learns the teacher's (`teacher_pooled` over the rows, the transfer set's "pooled"), 1 - cosine at
    that weight; the projection is dropped afterwards (the saved model is a plain classifier). `attention` > 0 (with
    `soft_from`): KL to the teacher's head-averaged attention maps (beside `soft_from`, run on each batch with its ids
    mapped from the model's: nas/teachers/align.py), each layer matched uniformly, at that weight. `hidden` > 0 (with
    `soft_from`): MSE between the teacher's hidden states, run on each batch the same way, and the model's through a
    learned projection to the teacher's width (`hidden_projection`, shared by the layers, dropped afterwards; TinyBERT's
    intermediate-layer loss), the embedding output and each layer matched uniformly, at that weight. `lr`: the peak
    learning rate (linear warm-up over a tenth, then linear decay); `soft_loss` (with `soft_from`): the loss on the
    teacher's logits; `length_groups` > 0 (with `soft_from`): batches of similar length (nas/distill/loop.py)."""
    from tqdm import tqdm

    from nas.distill.augment import with_transfer_set
    from nas.teachers import recipe

    tr = torch.as_tensor(splits["train"], device="cpu")
    weights = None if soft_from else recipe.class_weights(labels[tr], num_labels)
    x, y, soft, hard = {k: v[tr] for k, v in tensors.items()}, labels[tr], None, None
    if soft_from:
        x, y, soft, hard = with_transfer_set(tensors, labels, torch.load(soft_from), tr, transfer)
    targets = None
    if soft_from and embedding > 0:
        targets = embedding_targets(soft_from, tr, transfer)
        with on_host():
            model.embedding_projection = torch.nn.Linear(model.config.hidden_size, targets.shape[1])
    teacher, id_map = (inner_teacher(soft_from, model) if soft_from and (attention > 0 or hidden > 0)
                       else (None, None))
    if teacher is not None and hidden > 0:
        with on_host():
            model.hidden_projection = torch.nn.Linear(model.config.hidden_size, teacher.config.hidden_size)
    settings = DistillSettings(lr=lr if soft_from else INIT_LR, alpha_soft=0.5 if soft_from else 0.0,
                               soft_loss=soft_loss, beta_hard=0.5 if soft_from else 1.0, warmup_ratio=0.1,
                               batch_size=TEACHER_BATCH, class_weights=weights,
                               embedding_weight=embedding if targets is not None else 0.0,
                               attention_weight=attention if teacher is not None else 0.0,
                               hidden_weight=hidden if teacher is not None else 0.0, layer_map="uniform",
                               length_groups=length_groups if soft_from else 0)
    # a student initialiser learns from the teacher's logits: its epochs are what the spec says
    steps = steps_for(len(y), TEACHER_BATCH, epochs, None) if soft_from else teacher_steps(len(tr), epochs)
    what = "distilling the student initialiser from the teacher" if soft_from else "fine-tuning the teacher"
    log(f"{what} on {len(tr)} rows" + (f" and {len(y) - len(tr)} teacher-labelled transfer rows" if len(y) > len(tr)
                                       else "") + f" for up to {steps} steps (cached afterwards)"
        + (f"; class weights {list(weights)} for its skewed labels" if weights else ""))
    bar = tqdm(total=steps, desc="student init" if soft_from else "teacher", unit="step", leave=False)

    def tick(s, loss):
        bar.update(s + 1 - bar.n)  # a resumed run starts where its checkpoint was
        bar.set_postfix(loss=f"{loss:.3f}")

    stopper = None
    if recipe.early_stopping_applies(len(y), TEACHER_BATCH, steps):
        dev = torch.as_tensor(splits["dev"], device="cpu")
        stopper = recipe.EarlyStopping(model, {k: v[dev] for k, v in tensors.items()}, labels[dev], metric,
                                       recipe.epoch_steps(len(y), TEACHER_BATCH), compute, then=tick)
    saver = checkpoint and TrainCheckpoint(checkpoint, stateful={"early_stopping": stopper} if stopper else {})
    info = distill(model, x, y, soft, settings, steps, seed, compute=compute, on_step=stopper or tick,
                   hard_mask=hard, checkpoint=saver, teacher_embeddings=targets, teacher=teacher,
                   teacher_input_map=id_map) if steps else None
    bar.close()  # before the line below, or the bar redraws over it
    if saver and saver.resumed_from:
        log(f"{what}: resumed from its checkpoint at step {saver.resumed_from} of {steps}")
    line = stopper.finish(info["steps"]) if stopper else None
    if targets is not None:
        del model.embedding_projection
    if hasattr(model, "hidden_projection"):
        del model.hidden_projection
    if line:
        log(line)
    return line


def inner_teacher(soft_from: str, model) -> tuple:
    """(the fine-tuned teacher beside its logits file `soft_from`, the map from `model`'s token ids to its): what the
    initialiser's attention and hidden-state losses run on each batch. ValueError where the two tokenizers cut text
    differently."""
    from nas.teachers.align import token_map

    home = pathlib.Path(soft_from).with_name("model")
    id_map, why = token_map(AutoTokenizer.from_pretrained(home), AutoTokenizer.from_pretrained(model.name_or_path))
    if id_map is None:
        raise ValueError(f"attention maps and hidden states need tokens that line up: {why}")
    return load_pretrained(home).eval(), id_map


def pooled_path(logits_path: str | pathlib.Path) -> pathlib.Path:
    """Where a fine-tuned teacher's pooled final hidden states over the dataset's rows are cached: beside its logits."""
    return pathlib.Path(logits_path).with_name("pooled.pt")


def embedding_targets(soft_from: str, train_idx: torch.Tensor, transfer: dict | None) -> torch.Tensor:
    """The initialiser's embedding targets in `with_transfer_set`'s row order (train rows, then the transfer set's),
    fp32: the teacher's pooled states beside its logits file `soft_from` and the transfer set's "pooled"."""
    path = pooled_path(soft_from)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the teacher's pooled states (teacher_pooled) are not cached")
    parts = [torch.load(path, map_location="cpu")[train_idx]]
    if transfer is not None:
        if "pooled" not in transfer:
            raise ValueError("the transfer set carries no pooled states: label it with pooled=True "
                             "(nas/distill/transfer.py)")
        parts.append(transfer["pooled"])
    return torch.cat(parts).float()
