"""The Answer Agent task: questions over fixed banks; reward EM (+ F1 shaping) of each
sampled answer (``agents.rollout.answer_rollouts``)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

import numpy as np

from memr1_jax.agents.memory_manager import build_banks
from memr1_jax.agents.rollout import AnswerItem, answer_rollouts, greedy_answers, item_answer_prompts
from memr1_jax.data import question_records
from memr1_jax.eval.metrics import exact_match, token_f1
from memr1_jax.tasks.base import Backbone, Log, final_eval_config, load_chat_model, mean_em_f1


class AnswerTask:
    def __init__(self, backbone: Backbone, log: Log, run_dir: pathlib.Path | None = None):
        self.backbone = b = backbone
        cfg = b.cfg
        t = cfg.task
        self.cfg = t.answer
        self.response_len = t.answer.max_new_tokens
        convs = list(b.split.train + b.split.validation)
        builder = None
        if t.bank == "llm":
            builder = load_chat_model(t.bank_manager_model, cfg, b.llm.mesh) if t.bank_manager_model else b.llm
        self.banks, _ = build_banks(convs, b.encoder, dataclasses.replace(t.manager, kind=t.bank),
                                    llm=builder, retriever=b.retriever)
        log(f"answer-agent banks ({t.bank}{', ' + t.bank_manager_model if t.bank_manager_model else ''}): "
            + ", ".join(f"{k}: {bank.size}" for k, bank in self.banks.items()))
        conv_of = {c.id: c for c in convs}
        self.train_items = [AnswerItem(conv_of[r.conversation_id], r.qa) for r in question_records(b.split.train)]
        self.val_items = [AnswerItem(conv_of[r.conversation_id], r.qa)
                          for r in question_records(b.split.validation)[: cfg.data.val_limit]]
        if not self.train_items:
            raise ValueError(f"data.path={cfg.data.path!r}: no training questions")

    def rollouts(self, params: Any, items: Sequence[AnswerItem], rng, group: int, temperature: float):
        b = self.backbone
        return answer_rollouts(b.llm, params, items, self.banks, b.encoder, b.retriever, self.cfg, group,
                               b.sampling(temperature), rng)

    def step_metrics(self, episodes) -> dict[str, float]:
        infos = [e.info for e in episodes]
        return {**mean_em_f1(infos), "marker_rate": float(np.mean([i["marker"] for i in infos]))}

    def validate(self, params: Any) -> dict:
        """Mean EM / F1 of the greedy answers; F1 is the score (finer-grained than EM on few questions)."""
        if not self.val_items:
            return {"score": 0.0, "em": 0.0, "f1": 0.0, "n": 0}
        b = self.backbone
        prompts = item_answer_prompts(self.val_items, self.banks, b.encoder, b.retriever, self.cfg)
        answers = greedy_answers(b.llm, params, prompts, self.cfg.max_new_tokens)
        golds = [it.qa.answer for it in self.val_items]
        em = float(np.mean([exact_match(a, g) for a, g in zip(answers, golds)]))
        f1 = float(np.mean([token_f1(a, g) for a, g in zip(answers, golds)]))
        return {"score": f1, "em": em, "f1": f1, "n": len(golds)}

    def final_evaluation(self, params: Any, run_dir: pathlib.Path) -> dict[str, dict]:
        """The trained agent (and the untrained one) on banks built as in training."""
        from memr1_jax.eval.run import evaluate
        b = self.backbone
        t = b.cfg.task
        keys = {"eval.manager": t.bank, "eval.manager_model": t.bank_manager_model}
        # Banks as in training: the untrained backbone builds them unless another model is named.
        builder = b.llm if t.bank == "llm" and not t.bank_manager_model else None
        systems = [("trained", params)] + ([("base", b.llm.params)] if b.cfg.eval.base_too else [])
        return {tag: evaluate(final_eval_config(b.cfg, run_dir, tag, keys), progress=False,
                              answer_llm=b.with_params(p), manager_llm=builder, encoder=b.encoder,
                              extract_llm=None if b.cfg.data.extract_model else b.llm)
                for tag, p in systems}
