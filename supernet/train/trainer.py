"""The training loop of ``eformer-train`` in parts: build, resume, step, evaluate, checkpoint, finish.

:class:`Trainer` holds what one run needs (supernet, optimizer, schedule, data, logs, distributed info) and
takes its settings typed (:class:`conf.schemas.TrainSchema`), so nothing below casts a config value.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from conf.schemas import FinetuneSchema, TrainApp, TrainSchema
from supernet.arch import ArchConfig
from supernet.convert import convert_state_dict, read_checkpoint
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.errors import UserError
from supernet.evaluation import evaluate_member
from supernet.io_utils import atomic_torch_save, atomic_write_text, make_dir
from supernet.layers import LayerScale
from supernet.signatures import count_macs, count_params
from supernet.space import SearchSpace
from supernet.train.checkpoint import (
    fingerprint,
    flatten,
    load_training_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_digest,
)
from supernet.train.distributed import DistInfo, barrier, init_distributed, shutdown
from supernet.train.logs import JsonlLog
from supernet.train.precision import resolve_precision
from supernet.train.sandwich import sandwich_members, sandwich_step
from supernet.train.schedule import warmup_cosine


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not biases, norms, layer scales, bias tables)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "attention_biases" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def eval_members(supernet: Supernet, space: SearchSpace, names: list[str]) -> dict[str, ArchConfig]:
    """largest, smallest and the presets that are members of the space."""
    members = {"largest": supernet.largest(), "smallest": supernet.smallest()}
    for name in names:
        arch = supernet.member(ArchConfig.preset(name))
        if space.contains(arch):
            members[name] = arch
    return members


class Trainer:
    """One training run in ``run_dir``: ``Trainer(settings).run()`` trains, resumes or confirms it complete."""

    def __init__(self, settings: TrainApp) -> None:
        self.t: TrainSchema = settings.train
        self.finetune: FinetuneSchema = settings.finetune
        self.run_dir = Path(settings.run_dir)
        self.flat = flatten(dataclasses.asdict(settings))  # recorded in the supernet file; the resume fingerprint
        self.flat.pop("run_dir", None)
        self.data_cfg = settings.data
        self.space_cfg = settings.space
        self.info: DistInfo = init_distributed(settings.compute_device)
        self.step = 0

    # ------------------------------------------------------------------ build
    def build(self) -> Optional[dict[str, Any]]:
        """Data, supernet, optimizer, schedule; returns the checkpoint to resume from (None: a new run)."""
        t, info = self.t, self.info
        if t.threads:
            torch.set_num_threads(t.threads)
        self.precision = resolve_precision(t.precision, info.device)
        self.data = build_data(self.data_cfg)
        self.space = SearchSpace.from_dict(self.space_cfg)
        make_dir(self.run_dir, "run_dir")
        self.context = {"image_size": self.data.cfg.image_size, "num_classes": self.data.num_classes,
                        "distillation": t.distillation}
        state = load_training_checkpoint(self.run_dir, self.flat)
        if state is not None and state.get("complete") and (self.run_dir / "supernet.pt").is_file():
            return state
        torch.manual_seed(t.seed)
        self.supernet = Supernet(self.space, drop_path_rate=t.drop_path_rate, **self.context)
        with torch.no_grad():  # residual-branch scale at init (the release uses 1e-5 for 300 ImageNet epochs)
            for m in self.supernet.modules():
                if isinstance(m, LayerScale):
                    m.gamma.fill_(t.layer_scale_init)
        if t.init_from is not None and state is None:
            self.init_from_pretrained()
        self.fixed = self.fixed_member()
        if self.fixed is not None and self.finetune.weights and state is None:
            self.supernet.load_member(self.fixed, convert_state_dict(read_checkpoint(self.finetune.weights), "ours"))
        self.supernet.to(info.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.supernet, t.weight_decay), lr=t.lr,
                                           fused=t.fused_optimizer or None)
        self.steps_per_epoch = self.data.train_sampler(t.batch_size, 0, info.rank, info.world).num_batches()
        if self.steps_per_epoch == 0:
            raise UserError(f"train.batch_size: {t.batch_size} x {info.world} ranks exceeds the "
                            f"{len(self.data.splits['train'])} training images")
        self.total = t.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, self.total, t.warmup_steps, 1.0, t.min_lr / t.lr))
        self.scaler = self.precision.grad_scaler()
        self.model: torch.nn.Module = self.supernet
        if info.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.supernet, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                find_unused_parameters=True)
        return state

    def init_from_pretrained(self) -> None:
        """Write a pretrained member (e.g. a converted release checkpoint of L) into the supernet."""
        spec = self.t.init_from
        assert spec is not None
        arch = ArchConfig.resolve(spec.arch)
        sd = convert_state_dict(read_checkpoint(spec.weights), spec.source)
        if spec.exclude_head:
            sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
            self.supernet.load_member(arch, sd, skip_prefixes=("head.", "head_dist."))
        else:
            self.supernet.load_member(arch, sd)

    def fixed_member(self) -> Optional[ArchConfig]:
        """Fine-tuning mode (``finetune.arch=FILE|preset``): the one member trained every step, or None (sandwich)."""
        if not self.finetune.arch:
            return None
        arch = self.supernet.member(ArchConfig.resolve(self.finetune.arch))
        self.supernet.space.check_member(arch)
        return arch

    # ------------------------------------------------------------------ resume
    def resume(self, state: Optional[dict[str, Any]]) -> None:
        """Restore weights, optimizer, schedule, scaler and RNG from ``state``; open the logs where it stopped."""
        if state is not None:
            self.supernet.load_state_dict(state["supernet"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            if self.info.is_main:
                print(f"eformer-train: resuming {self.run_dir} from step {self.step} of {self.total}")
        keep = self.step if state is not None else None
        self.train_log = JsonlLog(self.run_dir / "train_log.jsonl", keep)
        self.metrics_log = JsonlLog(self.run_dir / "metrics.jsonl", keep)
        self.members_to_eval = (eval_members(self.supernet, self.space, list(self.t.eval_presets)) if self.fixed is None
                                else {"arch": self.fixed})

    # ------------------------------------------------------------------ step
    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> list[float]:
        """One optimizer step on a batch (the sandwich rule's members, or the fine-tuned one); logs it."""
        t = self.t
        x, y = x.to(self.info.device, non_blocking=True), y.to(self.info.device, non_blocking=True)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        members = [self.fixed] if self.fixed is not None else sandwich_members(
            self.space, self.step, t.seed, t.num_random, **self.context)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = sandwich_step(self.model, self.supernet, members, x, y, t.label_smoothing, t.kd_temperature,
                               self.precision, self.scaler, t.inplace_distillation)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), t.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.train_log.write({"step": self.step, "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                              "loss_largest": losses[0], "loss_smallest": losses[1] if len(losses) > 1 else None,
                              "loss_random": sum(losses[2:]) / max(1, len(losses) - 2), "loss_total": sum(losses),
                              "grad_norm": float(grad_norm)})
        return losses

    # ------------------------------------------------------------------ evaluate / checkpoint
    def evaluate(self, epoch: int) -> None:
        """Score the evaluation members after BN recalibration (rank 0); append to metrics.jsonl/csv."""
        if self.info.is_main:
            bs = self.t.eval_batch_size
            for label, arch in self.members_to_eval.items():
                res = evaluate_member(self.supernet, arch, self.data.eval_loader("calib", bs), self.data.eval_loader("val", bs),
                                      self.t.bn_calib_batches, self.info.device)
                self.metrics_log.write({"epoch": epoch, "step": self.step, "member": label, "top1": res["top1"],
                                        "loss": res["loss"], "params": count_params(arch), "macs": count_macs(arch),
                                        "arch": arch.summary()})
            self.metrics_log.to_csv(self.run_dir / "metrics.csv")
        barrier(self.info)

    def checkpoint(self, complete: bool = False) -> None:
        if self.info.is_main:
            save_checkpoint(self.run_dir, {
                "supernet": self.supernet.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "step": self.step, "complete": complete,
                "fingerprint": fingerprint(self.flat), "config": self.flat, "world": self.info.world,
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            })
        barrier(self.info)

    # ------------------------------------------------------------------ finish
    def finish(self, started: float) -> Path:
        """Agree on the final state across ranks; write supernet.pt (model.pt when fine-tuning) and final.json."""
        final_path = self.run_dir / "supernet.pt"
        info = self.info
        # Parameters must already agree across ranks; BN running statistics are per rank until DDP's
        # next broadcast, so rank 0's are broadcast once more before the final state is written.
        digests = {"parameters": [weights_digest(self.supernet, parameters_only=True)]}
        if info.enabled:
            gathered: list[Any] = [None] * info.world
            torch.distributed.all_gather_object(gathered, digests["parameters"][0])
            digests["parameters"] = gathered
            for buf in self.supernet.buffers():
                torch.distributed.broadcast(buf, 0)
            gathered = [None] * info.world
            torch.distributed.all_gather_object(gathered, weights_digest(self.supernet))
            digests["state"] = gathered
        else:
            digests["state"] = [weights_digest(self.supernet)]
        if info.is_main:
            summary = {"steps": self.step, "epochs": self.t.epochs, "world": info.world,
                       "seconds_this_session": time.time() - started,
                       "parameters_sha256_per_rank": digests["parameters"], "state_sha256_per_rank": digests["state"],
                       "ranks_identical": len(set(digests["parameters"])) == 1 and len(set(digests["state"])) == 1,
                       "final_metrics": [r for r in self.metrics_log.read() if r["epoch"] == self.t.epochs - 1]}
            self.supernet.save(final_path, train_config=self.flat)
            if self.fixed is not None:  # the fine-tuned network itself, loadable by eformer-export / build_model
                atomic_torch_save({"model": self.supernet.extract(self.fixed).state_dict(), "arch": self.fixed.to_dict()},
                                  self.run_dir / "model.pt")
            atomic_write_text(self.run_dir / "final.json", json.dumps(summary, indent=2) + "\n")
        self.checkpoint(complete=True)
        return final_path

    # ------------------------------------------------------------------ run
    def run(self) -> Path:
        """Train (or resume, or confirm complete) this run; returns the supernet file."""
        try:
            state = self.build()
            if state is not None and state.get("complete") and (self.run_dir / "supernet.pt").is_file():
                if self.info.is_main:
                    print(f"eformer-train: {self.run_dir} is already complete ({state['step']} steps); nothing to do")
                return self.run_dir / "supernet.pt"
            self.resume(state)
            bar = tqdm(total=self.total, initial=self.step, desc="eformer-train", unit="step",
                       disable=not self.info.is_main or not self.t.progress, dynamic_ncols=True)
            started = time.time()
            while self.step < self.total:
                epoch, first = divmod(self.step, self.steps_per_epoch)
                pin = self.info.device.type == "cuda"
                for x, y in self.data.train_loader(self.t.batch_size, epoch, self.info.rank, self.info.world, first, pin):
                    losses = self.train_step(x, y, epoch)
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[0]:.3f}", epoch=epoch)
                    end_of_epoch = self.step % self.steps_per_epoch == 0
                    if end_of_epoch:
                        self.evaluate(epoch)
                    if end_of_epoch or self.step % self.t.checkpoint_every == 0:
                        self.checkpoint()
            bar.close()
            return self.finish(started)
        finally:
            shutdown(self.info)
