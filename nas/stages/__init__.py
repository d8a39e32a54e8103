"""The stages of a job, one module (or package) each, run in the order `nas/pipeline.py` gives:
`teacher` -> `transfer` (the teacher-labelled transfer corpus, when the spec has one) -> `search` (per-trial KD) or
`supernet` (the AutoDisc-style schedule) -> `hpo` -> `scoring` (every front point on test, once) -> `references`.

Every stage has two functions:

- `check(spec, teacher_config)`: raise `SpecError` for anything wrong with its part of the input. All checks run before the
  job row is written, so a job that fails validation writes nothing.
- `run(ctx, store)`: do the stage's work for the job in `ctx` (a `JobContext`), writing every trial, metric, latency and
  artefact to the store as it happens.

What "a stage resumes from what the store holds" means, for every stage:

1. A stage first reads its own trials of the job from the store. A COMPLETE trial is never run again: its metrics and
   artefacts are read back instead (a finished supernet's model directory, a scored reference, a distilled assistant).
2. A trial left RUNNING by a killed process was set back to WAITING by the pipeline before any stage runs
   (`Store.reset_unfinished_trials`); the stage runs WAITING trials before it asks for new ones, so none is lost and
   none is duplicated. Long trials (the supernet) continue from their last checkpoint, and so do the teacher's
   fine-tuning, the student initialiser's distillation and each final (nas/distill/resume.py: at most
   NAS_TRAIN_CHECKPOINT_S of training is lost).
3. A stage decides from the store, not from memory: how many trials a budget still allows, which shapes a strategy has
   already seen (told back to it before it proposes more), which configurations a searcher has learnt from.
4. What a stage hands the next one goes into the `JobContext` (the teacher's info, the splits, the token cache); a stage
   never re-reads from the store what the previous stage of the same run just put there.

So `nas resume JOB` runs the same stages again and loses at most the training since the last checkpoint.
"""
