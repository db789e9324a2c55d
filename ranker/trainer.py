"""Fine-tuning the in-context ranker with BlockRank's objective (``braid train ranker``).

Each step draws ``batch_size`` examples (a judged query, its relevant documents, hard negatives mined by a braid
first stage), lays each out as a BlockRank prompt of ``window`` shuffled documents, runs the block-sparse forward
*with gradients* through every layer (the exact torch attention backend; per-layer gradient checkpointing) and
minimizes :class:`~braid.ranker.train_objective.BlockRankLoss`. Mixed precision is bf16 autocast over float32 weights;
everything random (example order, window composition, initialization of nothing) derives from ``seed``, so a run
is reproducible and a resumed run continues exactly where the last checkpoint left it.

Output folder: ``checkpoint-NNNNNN/`` every ``save_every`` steps (Hugging Face format plus the optimizer state;
the last ``keep_checkpoints`` are kept), ``final/`` at the end, ``training.json`` (configuration, data, loss
curve, wall time). Every folder is written under a temporary name and renamed, so a killed run never leaves a
half-written checkpoint; ``final/`` (or the output folder itself) loads as the ranker's ``model``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from braid.common.atomic_file import atomic_write_text
from braid.common.errors import BraidError
from braid.ranker.llm_source import LoadedLM, load_llm
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker, pick_device
from braid.ranker.train_examples import TrainExample
from braid.ranker.train_objective import BlockRankLoss

log = logging.getLogger(__name__)

TRAIN_DTYPES = ("bfloat16", "float32")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one fine-tuning run (defaults follow BlockRank where it states them)."""

    model: str = "smollm2"
    window: int = 20
    max_positives: int = 1
    max_doc_tokens: int = 160
    max_query_tokens: int = 64
    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-5
    warmup: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    aux_weight: float = 0.1
    temperature: float = 0.05
    score_layer: int | None = None
    probe_tokens: int = 8
    seed: int = 0
    dtype: str = "bfloat16"
    device: str = "auto"
    gradient_checkpointing: bool = True
    save_every: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_positives", "probe_tokens", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise BraidError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.window < 2:
            raise BraidError(f"window must be >= 2 documents (a positive and a negative), got {self.window}")
        if not 0 < self.lr < 1:
            raise BraidError(f"lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise BraidError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.dtype not in TRAIN_DTYPES:
            raise BraidError(f"dtype must be one of {', '.join(TRAIN_DTYPES)} for training, got {self.dtype!r}")
        if self.score_layer is not None and self.score_layer < 0:
            raise BraidError(f"score-layer must be >= 0, got {self.score_layer}")
        BlockRankLoss(self.aux_weight, self.temperature)  # validates both

    def rerank_spec(self) -> RerankSpec:
        """The ranker settings the model is trained under (and should be served with)."""
        return RerankSpec(
            model=self.model,
            mode="first",
            window=self.window,
            stride=max(1, self.window // 2),
            layers=() if self.score_layer is None else (self.score_layer,),
            probe_tokens=self.probe_tokens,
            max_doc_tokens=self.max_doc_tokens,
            max_query_tokens=self.max_query_tokens,
            backend="torch",
            cache_mb=0,
            dtype="float32",
            device=self.device,
        )


def check_run_folder(output: Path, config: TrainConfig) -> None:
    """Refuse an output that is a file, a foreign folder, a finished run, or a run with other settings."""
    if (output / "final" / "config.json").is_file():
        raise BraidError(f"{output} already holds a finished training run (final/); choose another --output")
    if output.exists() and not output.is_dir():
        raise BraidError(f"--output {output} is a file; give a folder")
    record = output / "training.json"
    if output.is_dir() and any(output.iterdir()) and not record.is_file():
        raise BraidError(f"--output {output} is a non-empty folder that is not a braid training run")
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8")).get("config", {})
        mine = asdict(config)
        changed = sorted(key for key in mine if saved.get(key) != mine[key])
        if changed:
            raise BraidError(
                f"{output} holds a run with other settings ({', '.join(changed)} differ); resume with the same "
                "settings or choose another --output"
            )


class RankerTrainer:
    """Runs :class:`TrainConfig` over examples into an output folder (see the module docstring)."""

    def __init__(self, config: TrainConfig, output: Path, examples: Sequence[TrainExample]) -> None:
        if not examples:
            raise BraidError("no training examples")
        self.config = config
        self.output = Path(output)
        self.examples = list(examples)
        self.lm: LoadedLM | None = None
        self._order: tuple[int, list[int]] = (-1, [])
        check_run_folder(self.output, config)

    # -- output folder -------------------------------------------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        done = sorted(self.output.glob("checkpoint-[0-9]*"))
        done = [path for path in done if (path / "trainer_state.pt").is_file()]
        return done[-1] if done else None

    def _save_folder(self, name: str, lm: LoadedLM, state: dict | None) -> Path:
        target = self.output / name
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.output))
        try:
            lm.model.save_pretrained(staging)
            lm.tokenizer.save_pretrained(staging)
            if state is not None:
                torch.save(state, staging / "trainer_state.pt")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _write_record(self, record: dict) -> None:
        atomic_write_text(self.output / "training.json", json.dumps(record, indent=1) + "\n")

    # -- data ----------------------------------------------------------------------------------------------------

    def batch(self, step: int) -> list[TrainExample]:
        """The examples of ``step``: consecutive slices of seeded per-epoch permutations (resumable by step)."""
        size, count = self.config.batch_size, len(self.examples)
        picked = []
        for position in range(step * size, (step + 1) * size):
            epoch, offset = divmod(position, count)
            picked.append(self.examples[self._epoch_order(epoch)[offset]])
        return picked

    def _epoch_order(self, epoch: int) -> list[int]:
        if self._order[0] != epoch:  # one shuffle per epoch, not one per example drawn
            order = list(range(len(self.examples)))
            random.Random(f"{self.config.seed}:epoch:{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    # -- training ------------------------------------------------------------------------------------------------

    def _optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW with a linear warm-up, then a linear decay to 0 at the last step."""
        config = self.config
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warmup = max(1, round(config.warmup * config.steps))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (config.steps - step) / max(1, config.steps - warmup))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def _step(
        self,
        step: int,
        ranker: BlockRanker,
        layer: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        device: str,
    ) -> dict[str, float]:
        """One optimizer step over the step's batch of prompts; returns its history entry."""
        config = self.config
        prompts, positives = [], []
        for i, example in enumerate(self.batch(step)):
            texts, relevant = example.window(
                config.window, config.max_positives, random.Random(f"{config.seed}:{step}:{i}")
            )
            prompts.append(ranker.prompt(texts, example.query))
            positives.append(relevant)
        loss_fn = BlockRankLoss(config.aux_weight, config.temperature)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=config.dtype == "bfloat16"):
            results = ranker.forward.run_many(
                prompts, score_layers=[layer], probe=config.probe_tokens, need_logits=True
            )
            parts = [
                loss_fn(result.last_logits, result.doc_attention[layer], relevant, prompt.label_token_ids)
                for result, relevant, prompt in zip(results, positives, prompts, strict=True)
            ]
        loss = torch.stack([total for total, _, _ in parts]).mean()
        if not torch.isfinite(loss):
            raise BraidError(f"training diverged at step {step + 1}: loss is {loss.item()}; lower --lr")
        loss.backward()
        model = ranker.forward.model
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "step": step + 1,
            "loss": loss.item(),
            "lm_loss": float(torch.stack([lm_part for _, lm_part, _ in parts]).mean()),
            "attention_loss": float(torch.stack([aux for _, _, aux in parts]).mean()),
            "grad_norm": float(grad_norm),
            "lr": scheduler.get_last_lr()[0],
        }

    def train(self) -> dict:
        config = self.config
        torch.manual_seed(config.seed)
        resume = self.latest_checkpoint()
        source = str(resume) if resume else config.model
        spec = config.rerank_spec()
        device = pick_device(spec.device)
        lm = load_llm(source, "float32", device)
        ranker = BlockRanker(spec, lm)
        # Created only once the model has loaded: a bad --model leaves no empty run folder behind.
        self.output.mkdir(parents=True, exist_ok=True)
        model = lm.model
        model.requires_grad_(True)
        model.train()
        ranker.forward.checkpoint = config.gradient_checkpointing
        layer = ranker.layers[0]
        optimizer, scheduler = self._optimizer(model)
        start, history, elapsed = 0, [], 0.0
        if resume is not None:
            state = torch.load(resume / "trainer_state.pt", map_location=device, weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, history, elapsed = state["step"], state["history"], state["elapsed_s"]
            log.warning("resuming from %s (step %d of %d)", resume, start, config.steps)
        record = {
            "config": asdict(config),
            "model_source": config.model,
            "score_layer": layer,
            "examples": len(self.examples),
            "sources": sorted({example.source for example in self.examples}),
            "device": device,
            "rerank": spec.to_dict() | {"model": str(self.output / "final"), "layers": [layer]},
        }
        self._write_record(record | {"history": history, "finished": False})
        began = time.perf_counter() - elapsed
        bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train ranker", unit="step",
                   file=sys.stderr)  # fmt: skip
        for step in bar:
            entry = self._step(step, ranker, layer, optimizer, scheduler, device)
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", lm=f"{entry['lm_loss']:.3f}")
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                state = {
                    "step": step + 1,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "elapsed_s": time.perf_counter() - began,
                }
                self._save_folder(f"checkpoint-{step + 1:06d}", lm, state)
                for old in sorted(self.output.glob("checkpoint-[0-9]*"))[: -config.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
                self._write_record(record | {"history": history, "finished": False})
        bar.close()
        model.eval()
        model.requires_grad_(False)
        self.lm = lm  # the trained model, ready for inference
        final = self._save_folder("final", lm, None)
        summary = record | {
            "history": history,
            "finished": True,
            "wall_s": round(time.perf_counter() - began, 1),
            "final": str(final),
            "first_loss": history[0]["loss"] if history else math.nan,
            "last_loss": history[-1]["loss"] if history else math.nan,
        }
        self._write_record(summary)
        return summary
