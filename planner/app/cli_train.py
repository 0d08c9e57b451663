"""`fitplan demo`, `plan` and `train` (with `--plan`, `--resume` or `--auto`): plan and train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from planner.app.cli_app import (
    DataArg,
    JsonOpt,
    app,
    err,
    handle_errors,
    print_json,
    stdout_console,
)
from trainer.train.run_dir import SUMMARY_KEYS

BudgetMemoryOpt = Annotated[
    str | None,
    typer.Option("--budget-memory", help="Memory the run may use, e.g. 4GiB (default: probed)."),
]
BudgetTimeOpt = Annotated[
    str | None, typer.Option("--budget-time", help="Wall time for training, e.g. 20m or 1h30m.")
]
NoCacheOpt = Annotated[
    bool,
    typer.Option("--no-cache", help="Measure everything again: neither read nor write the cache."),
]


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data and run.")] = Path(
        "fitplan-demo"
    ),
    budget_time: Annotated[
        str, typer.Option("--budget-time", help="Planning + training time.")
    ] = "5m",
    json_out: JsonOpt = False,
) -> None:
    """Generate a small synthetic dataset and run probe, scan, plan, train and evaluate on it."""
    from planner.app.demo_run import run_demo
    from planner.app.units import parse_duration
    from trainer.train.progress import RichProgress

    progress = RichProgress(epochs=0, console=err)
    try:
        summary = run_demo(
            out,
            budget_time_s=parse_duration(budget_time),
            log=lambda line: err.print(line, highlight=False, markup=False),
            callbacks=[progress],
        )
    finally:
        progress.close()
    if json_out:
        print_json(summary)
    else:
        _render_train_result(summary["train"], Path(summary["out"]) / "run", False)
        t = summary["test"]
        stdout_console().print(
            f"held-apart test set: Dice {t['dice_mean']:.3f}, IoU {t['iou_mean']:.3f} "
            f"on {t['images']} images; the plan is {summary['plan']}"
        )


@app.command("plan")
@handle_errors
def plan_cmd(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help="Plan file to write.")] = Path("plan.json"),
    images: Annotated[str, typer.Option(help="Image folder under DATA.")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA.")] = "masks",
    val: Annotated[Path | None, typer.Option("--val", help="Separate validation root.")] = None,
    budget_memory: BudgetMemoryOpt = None,
    budget_time: BudgetTimeOpt = None,
    backbones: Annotated[
        str | None, typer.Option("--backbones", help="Comma-separated backbones to consider.")
    ] = None,
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="Comma-separated square crop sides, e.g. 256,384.")
    ] = None,
    precisions: Annotated[
        str | None, typer.Option("--precisions", help="e.g. float32,mixed_bfloat16.")
    ] = None,
    effective_batch: Annotated[int, typer.Option("--effective-batch", min=1)] = 16,
    headroom: Annotated[float, typer.Option("--headroom", min=0.0, max=0.9)] = 0.1,
    weights: Annotated[
        str, typer.Option(help="Encoder weights: none, imagenet or a file.")
    ] = "none",
    devices: Annotated[
        int, typer.Option("--devices", min=0, help="GPUs per worker (0: all visible).")
    ] = 1,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Hosts of a multi-worker run.")
    ] = 1,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure candidates in child processes and write the plan that fits the budgets."""
    from planner.app.plan_view import plan_table
    from planner.app.units import parse_bytes, parse_duration, parse_int_list, parse_list
    from planner.make_plan import make_plan

    result = make_plan(
        data,
        images=images,
        masks=masks,
        val=val,
        out=out,
        weights=weights,
        budget_memory=parse_bytes(budget_memory) if budget_memory else None,
        budget_time_s=parse_duration(budget_time) if budget_time else None,
        backbones=parse_list(backbones, "--backbones"),
        sizes=parse_int_list(sizes, "--sizes"),
        precisions=parse_list(precisions, "--precisions"),
        effective_batch=effective_batch,
        headroom=headroom,
        devices=devices or None,
        workers=workers,
        use_cache=not no_cache,
        log=lambda line: err.print(line, highlight=False, markup=False),
    )
    err.print(
        f"wrote {out}: planning took {result.planning_time_s:.0f} s, "
        f"{result.children} child processes",
        highlight=False,
        markup=False,
    )
    if json_out:
        print_json(result.plan.to_dict())
    else:
        stdout_console().print(plan_table(result.plan.to_dict()))


@app.command()
@handle_errors
def train(
    plan: Annotated[
        Path | None, typer.Option("--plan", help="Plan file to execute (see docs/plan-schema.md).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder to create.")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Override the plan's data.path.")
    ] = None,
    val: Annotated[
        Path | None, typer.Option("--val", help="Validation root (same folder names as DATA).")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option("--max-epochs", min=1)] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", min=1, help="Cap optimizer updates per epoch (quick runs)."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder.")
    ] = None,
    auto: Annotated[
        Path | None,
        typer.Option("--auto", help="Hands-off: probe, scan, plan and train this dataset."),
    ] = None,
    images: Annotated[str, typer.Option(help="Image folder under DATA (--auto).")] = "images",
    masks: Annotated[str, typer.Option(help="Mask folder under DATA (--auto).")] = "masks",
    budget_memory: BudgetMemoryOpt = None,
    budget_time: BudgetTimeOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="--auto: measure everything again (no cache).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a plan (`--plan P --out RUN`) or continue a killed run (`--resume RUN`)."""
    import trainer.train.fit as fit
    from trainer.plan import load_plan
    from trainer.train.progress import RichProgress

    if auto is not None:
        if out is None:
            raise typer.BadParameter("--auto needs --out RUN")
        budgets = (budget_memory, budget_time, not no_cache)
        _train_auto(auto, out, val, images, masks, budgets, json_out)
        return
    if resume is None and (plan is None or out is None):
        raise typer.BadParameter("give --plan and --out, --resume RUN, or --auto DATA --out RUN")
    p = load_plan(resume / "plan.json" if resume is not None else plan)
    progress = RichProgress(epochs=max_epochs or p.epochs, console=err)
    try:
        if resume is not None:
            result = fit.resume(resume, data_path=_s(data), val_path=_s(val), callbacks=[progress])
        else:
            result = fit.train(
                p,
                out,
                data_path=_s(data),
                val_path=_s(val),
                max_epochs=max_epochs,
                max_steps=max_steps,
                callbacks=[progress],
            )
    finally:
        progress.close()
    _render_train_result(result.metrics, result.run_dir, json_out)


def _train_auto(data, out, val, images, masks, budgets, json_out) -> None:
    from planner.app.auto import auto_train
    from planner.app.units import parse_bytes, parse_duration
    from trainer.train.progress import RichProgress

    budget_memory, budget_time, use_cache = budgets
    progress = RichProgress(epochs=0, console=err)  # epochs known once planned

    def log(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    try:
        result, trained = auto_train(
            data,
            out,
            val=val,
            images=images,
            masks=masks,
            budget_memory=parse_bytes(budget_memory) if budget_memory else None,
            budget_time_s=parse_duration(budget_time) if budget_time else None,
            use_cache=use_cache,
            callbacks=[progress],
            log=log,
        )
    finally:
        progress.close()
    metrics = {
        **trained.metrics,
        "planning_time_s": round(result.planning_time_s, 2),
        "planning_children": result.children,
    }
    _render_train_result(metrics, trained.run_dir, json_out)


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _render_train_result(metrics: dict[str, Any], run_dir: Path, json_out: bool) -> None:
    if json_out:
        print_json({"run_dir": str(run_dir), **metrics})
        return
    from rich.table import Table

    table = Table(title=f"run {run_dir}", show_header=False)
    for key in (
        *SUMMARY_KEYS,
        "peak_memory_bytes",
        "predicted_peak_bytes",
        "micro_batch",
        "accumulation_steps",
        "effective_batch",
        "precision",
        "backbone",
    ):
        v = metrics.get(key)
        if key.endswith("bytes") and isinstance(v, (int, float)):
            v = f"{v / 2**30:.2f} GiB"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        table.add_row(key, str(v))
    stdout_console().print(table)
