"""Evaluating checkpoints: zero-shot rank classification on prompted tasks (`zero_shot`),
held-out loss (`heldout`), and an lm-evaluation-harness model (`lm_eval_model`)."""
