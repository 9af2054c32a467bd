"""``eformer-train``: train the weight-sharing supernet (Hydra app; conf/eformer_train.yaml).

    eformer-train                                   # digits, default space, runs/train/digits-efficientformerv2
    eformer-train space=tiny train.epochs=2 run_dir=runs/tiny
    torchrun --nproc_per_node=8 -m supernet.train.app data=imagefolder data.root=/data/imagenet
    eformer-train finetune.arch=export/x.yaml finetune.weights=export/x.pt run_dir=runs/finetune/x

Fine-tuning mode (``finetune.arch=`` an ArchConfig YAML or preset, optionally ``finetune.weights=``
its exported weights): the same loop trains that one member (no sandwich) and also writes model.pt.

Rerunning the same command resumes from the run directory's checkpoint (or does nothing if the
run is complete). Outputs in ``run_dir``: checkpoint.pt, supernet.pt (final), train_log.jsonl (per
step), metrics.jsonl / metrics.csv (per epoch: largest, smallest and the presets after BN
recalibration), final.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from conf.schemas import check_config, register_schemas
from supernet.arch import ArchConfig
from supernet.convert import convert_state_dict, read_checkpoint
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.errors import UserError, report_user_errors
from supernet.evaluation import evaluate_member
from supernet.io_utils import atomic_torch_save, atomic_write_text
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
from supernet.train.distributed import barrier, init_distributed, shutdown
from supernet.train.logs import JsonlLog
from supernet.train.precision import resolve_precision
from supernet.train.sandwich import sandwich_members, sandwich_step
from supernet.train.schedule import warmup_cosine

register_schemas()


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


def init_from_pretrained(supernet: Supernet, spec: DictConfig) -> None:
    """Write a pretrained member (e.g. a converted release checkpoint of L) into the supernet."""
    arch = ArchConfig.resolve(spec.arch)
    sd = convert_state_dict(read_checkpoint(spec.weights), spec.get("source", "official"))
    if spec.get("exclude_head", True):
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
        supernet.load_member(arch, sd, skip_prefixes=("head.", "head_dist."))
    else:
        supernet.load_member(arch, sd)


def fixed_member(supernet: Supernet, cfg: DictConfig) -> ArchConfig | None:
    """Fine-tuning mode (``finetune.arch=FILE|preset``): the one member trained every step, or None (sandwich rule)."""
    spec = (cfg.get("finetune") or {}).get("arch")
    if not spec:
        return None
    arch = supernet.member(ArchConfig.resolve(spec))
    supernet.space.check_member(arch)
    return arch


def run_training(cfg: DictConfig) -> Path:
    """Train (or resume, or confirm complete) the run in ``cfg.run_dir``; returns the supernet file."""
    check_config(cfg)
    t = cfg.train
    info = init_distributed()
    if t.get("threads"):
        torch.set_num_threads(int(t.threads))
    run_dir = Path(cfg.run_dir)
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    flat.pop("run_dir", None)
    precision = resolve_precision(str(t.get("precision", "fp32")), info.device)
    data = build_data(OmegaConf.to_container(cfg.data, resolve=True))
    space = SearchSpace.from_dict(OmegaConf.to_container(cfg.space, resolve=True))
    run_dir.mkdir(parents=True, exist_ok=True)
    context = {"image_size": data.cfg.image_size, "num_classes": data.num_classes, "distillation": bool(t.distillation)}
    state = load_training_checkpoint(run_dir, flat)
    final_path = run_dir / "supernet.pt"
    if state is not None and state.get("complete") and final_path.is_file():
        if info.is_main:
            print(f"eformer-train: {run_dir} is already complete ({state['step']} steps); nothing to do")
        shutdown(info)
        return final_path

    torch.manual_seed(int(t.seed))
    supernet = Supernet(space, drop_path_rate=float(t.drop_path_rate), **context)
    with torch.no_grad():  # residual-branch scale at init (the release uses 1e-5 for 300 ImageNet epochs)
        for m in supernet.modules():
            if isinstance(m, LayerScale):
                m.gamma.fill_(float(t.layer_scale_init))
    if t.get("init_from") and state is None:
        init_from_pretrained(supernet, t.init_from)
    fixed = fixed_member(supernet, cfg)
    if fixed is not None and cfg.finetune.get("weights") and state is None:
        supernet.load_member(fixed, convert_state_dict(read_checkpoint(cfg.finetune.weights), "ours"))
    supernet.to(info.device)
    optimizer = torch.optim.AdamW(param_groups(supernet, float(t.weight_decay)), lr=float(t.lr))
    steps_per_epoch = data.train_sampler(int(t.batch_size), 0, info.rank, info.world).num_batches()
    if steps_per_epoch == 0:
        raise UserError(f"train.batch_size: {t.batch_size} x {info.world} ranks exceeds the {len(data.splits['train'])} training images")
    total = int(t.epochs) * steps_per_epoch
    lr_at = lambda s: warmup_cosine(s, total, int(t.warmup_steps), 1.0, float(t.min_lr) / float(t.lr))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    scaler = precision.grad_scaler()
    step = 0
    if state is not None:
        supernet.load_state_dict(state["supernet"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if info.is_main:
            print(f"eformer-train: resuming {run_dir} from step {step} of {total}")
    model: torch.nn.Module = supernet
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            supernet, device_ids=[info.device.index] if info.device.type == "cuda" else None, find_unused_parameters=True
        )
    keep = step if state is not None else None
    train_log = JsonlLog(run_dir / "train_log.jsonl", keep)
    metrics_log = JsonlLog(run_dir / "metrics.jsonl", keep)
    members_to_eval = eval_members(supernet, space, list(t.eval_presets)) if fixed is None else {"arch": fixed}

    def checkpoint(complete: bool = False) -> None:
        if info.is_main:
            save_checkpoint(run_dir, {
                "supernet": supernet.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "step": step, "complete": complete,
                "fingerprint": fingerprint(flat), "config": flat, "world": info.world,
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
            })
        barrier(info)

    def evaluate_epoch(epoch: int) -> None:
        if info.is_main:
            bs = int(t.eval_batch_size)
            for label, arch in members_to_eval.items():
                res = evaluate_member(
                    supernet, arch, data.eval_loader("calib", bs), data.eval_loader("val", bs),
                    int(t.bn_calib_batches), info.device,
                )
                metrics_log.write({"epoch": epoch, "step": step, "member": label, "top1": res["top1"], "loss": res["loss"],
                                   "params": count_params(arch), "macs": count_macs(arch), "arch": arch.summary()})
            metrics_log.to_csv(run_dir / "metrics.csv")
        barrier(info)

    bar = tqdm(total=total, initial=step, desc="eformer-train", unit="step", disable=not info.is_main or not t.progress,
               dynamic_ncols=True)
    started = time.time()
    while step < total:
        epoch, first = divmod(step, steps_per_epoch)
        for x, y in data.train_loader(int(t.batch_size), epoch, info.rank, info.world, first):
            x, y = x.to(info.device), y.to(info.device)
            members = [fixed] if fixed is not None else sandwich_members(space, step, int(t.seed), int(t.num_random), **context)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            losses = sandwich_step(model, supernet, members, x, y, float(t.label_smoothing), float(t.kd_temperature),
                                   precision, scaler, bool(t.get("inplace_distillation", True)))
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(supernet.parameters(), float(t.grad_clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            train_log.write({"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                             "loss_largest": losses[0], "loss_smallest": losses[1] if len(losses) > 1 else None,
                             "loss_random": sum(losses[2:]) / max(1, len(losses) - 2), "loss_total": sum(losses),
                             "grad_norm": float(grad_norm)})
            bar.update(1)
            bar.set_postfix(loss=f"{losses[0]:.3f}", epoch=epoch)
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch:
                evaluate_epoch(epoch)
            if end_of_epoch or step % int(t.checkpoint_every) == 0:
                checkpoint()
    bar.close()
    # Parameters must already agree across ranks; BN running statistics are per rank until DDP's
    # next broadcast, so rank 0's are broadcast once more before the final state is written.
    digests = {"parameters": [weights_digest(supernet, parameters_only=True)]}
    if info.enabled:
        gathered: list[Any] = [None] * info.world
        torch.distributed.all_gather_object(gathered, digests["parameters"][0])
        digests["parameters"] = gathered
        for buf in supernet.buffers():
            torch.distributed.broadcast(buf, 0)
        gathered = [None] * info.world
        torch.distributed.all_gather_object(gathered, weights_digest(supernet))
        digests["state"] = gathered
    else:
        digests["state"] = [weights_digest(supernet)]
    if info.is_main:
        summary = {"steps": step, "epochs": int(t.epochs), "world": info.world, "seconds_this_session": time.time() - started,
                   "parameters_sha256_per_rank": digests["parameters"], "state_sha256_per_rank": digests["state"],
                   "ranks_identical": len(set(digests["parameters"])) == 1 and len(set(digests["state"])) == 1,
                   "final_metrics": [r for r in metrics_log.read() if r["epoch"] == int(t.epochs) - 1]}
        supernet.save(final_path, train_config=flat)
        if fixed is not None:  # the fine-tuned network itself, loadable by eformer-export / build_model
            atomic_torch_save({"model": supernet.extract(fixed).state_dict(), "arch": fixed.to_dict()}, run_dir / "model.pt")
        atomic_write_text(run_dir / "final.json", json.dumps(summary, indent=2) + "\n")
    checkpoint(complete=True)
    shutdown(info)
    return final_path


@hydra.main(config_path="../../conf", config_name="eformer_train", version_base="1.3")
@report_user_errors("eformer-train")
def main(cfg: DictConfig) -> None:
    run_training(per_job_run_dir(cfg))


def per_job_run_dir(cfg: DictConfig) -> DictConfig:
    """Under ``-m`` every job of a sweep gets its own run directory: ``<run_dir>/<its overrides>`` (e.g.
    ``runs/train/fashion-efficientformerv2/train.lr=0.001``), so jobs neither share nor resume each other's run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        suffix = HydraConfig.get().job.override_dirname
        if suffix:
            cfg.run_dir = str(Path(cfg.run_dir) / suffix)
    return cfg


if __name__ == "__main__":
    main()
