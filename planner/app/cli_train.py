"""`fitplan demo`, `plan` and `train` (with `--plan`, `--resume` or `--auto`): plan and train."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
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
from planner.app.cli_labels import (
    ClassesOpt,
    IgnoreIndexOpt,
    MergeRareOpt,
    NormalizeOpt,
    PaletteOpt,
    data_options,
    with_data,
)
from planner.app.cli_options import (
    BackbonesOpt,
    BudgetMemoryOpt,
    BudgetTimeOpt,
    CallbacksOpt,
    DevicesOpt,
    EffectiveBatchOpt,
    HeadroomOpt,
    PrecisionsOpt,
    SetOpt,
    SizesOpt,
    WeightsOpt,
    WorkersOpt,
    planner_kwargs,
    refuse,
    renamed,
)
from planner.search import presets
from trainer.train.run_dir import SUMMARY_KEYS

NoCacheOpt = Annotated[
    bool,
    typer.Option("--no-cache", help="Measure everything again: neither read nor write the cache."),
]


@app.command()
@handle_errors
def demo(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir", help="Folder for the demo's data and run [default: fitplan-demo]."
        ),
    ] = None,
    out_old: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    budget_time: Annotated[
        str, typer.Option("--budget-time", help="Planning + training time.")
    ] = "5m",
    json_out: JsonOpt = False,
) -> None:
    """Generate a small synthetic dataset and run probe, scan, plan, train and evaluate on it."""
    out = renamed(out_dir, out_old, "--out-dir", "--out") or Path("fitplan-demo")
    from planner.app.demo_run import run_demo
    from planner.app.units import parse_duration

    progress, made = _progress_after_planning(0)
    try:
        summary = run_demo(
            out,
            budget_time_s=parse_duration(budget_time),
            log=lambda line: err.print(line, highlight=False, markup=False),
            callbacks=progress,
        )
    finally:
        for p in made:
            p.close()
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
    backbones: BackbonesOpt = None,
    sizes: SizesOpt = None,
    precisions: PrecisionsOpt = None,
    effective_batch: EffectiveBatchOpt = None,
    headroom: HeadroomOpt = presets.HEADROOM,
    weights: WeightsOpt = "none",
    devices: DevicesOpt = 1,
    workers: WorkersOpt = 1,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
    classes: ClassesOpt = None,
    ignore_index: IgnoreIndexOpt = None,
    merge_rare: MergeRareOpt = False,
    normalize: NormalizeOpt = None,
    palette: PaletteOpt = None,
) -> None:
    """Measure candidates in child processes and write the plan that fits the budgets."""
    from planner.app.plan_view import plan_table
    from planner.make_plan import make_plan

    result = make_plan(
        data,
        images=images,
        masks=masks,
        val=val,
        out=out,
        **planner_kwargs(
            budget_memory,
            budget_time,
            backbones,
            sizes,
            precisions,
            effective_batch,
            headroom,
            weights,
            devices,
            workers,
        ),
        use_cache=not no_cache,
        data_options=data_options(classes, ignore_index, merge_rare, normalize, palette),
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
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Run folder to create (--plan, --auto).")
    ] = None,
    out_old: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Override the plan's data.path.")
    ] = None,
    val: Annotated[
        Path | None, typer.Option("--val", help="Validation root (same folder names as DATA).")
    ] = None,
    max_epochs: Annotated[
        int | None,
        typer.Option("--max-epochs", min=1, help="Last epoch (overrides the plan's epochs)."),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", min=1, help="Cap optimizer updates per epoch (quick runs)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run in this folder (--max-epochs extends it)."),
    ] = None,
    auto: Annotated[
        Path | None,
        typer.Option("--auto", help="Hands-off: probe, scan, plan and train this dataset."),
    ] = None,
    settings: SetOpt = None,
    callbacks: CallbacksOpt = None,
    images: Annotated[str | None, typer.Option(help="--auto: image folder under DATA.")] = None,
    masks: Annotated[str | None, typer.Option(help="--auto: mask folder under DATA.")] = None,
    budget_memory: BudgetMemoryOpt = None,
    budget_time: BudgetTimeOpt = None,
    backbones: BackbonesOpt = None,
    sizes: SizesOpt = None,
    precisions: PrecisionsOpt = None,
    effective_batch: EffectiveBatchOpt = None,
    headroom: HeadroomOpt = None,
    weights: WeightsOpt = None,
    devices: DevicesOpt = None,
    workers: WorkersOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="--auto: measure everything again (no cache).")
    ] = False,
    json_out: JsonOpt = False,
    classes: ClassesOpt = None,
    ignore_index: IgnoreIndexOpt = None,
    merge_rare: MergeRareOpt = False,
    normalize: NormalizeOpt = None,
    palette: PaletteOpt = None,
) -> None:
    """Train a plan (`--plan P --out-dir RUN`), continue a run (`--resume RUN`) or plan and
    train in one go (`--auto DATA --out-dir RUN`, which takes `fitplan plan`'s options)."""
    out = renamed(out_dir, out_old, "--out-dir", "--out")
    modes = [m for m, v in (("--plan", plan), ("--resume", resume), ("--auto", auto)) if v]
    if len(modes) != 1:
        got = f" (got {' and '.join(modes)})" if modes else ""
        raise typer.BadParameter(
            f"give one of --plan P --out-dir RUN, --resume RUN or --auto DATA --out-dir RUN{got}"
        )
    planning = dict(
        images=images, masks=masks, budget_memory=budget_memory, budget_time=budget_time,
        backbones=backbones, sizes=sizes, precisions=precisions, effective_batch=effective_batch,
        headroom=headroom, weights=weights, devices=devices, workers=workers, no_cache=no_cache,
    )  # fmt: skip
    if auto is None:
        refuse("without --auto: they set up planning (change a plan with --set)", **planning)
    labels = data_options(classes, ignore_index, merge_rare, normalize, palette)
    if resume is not None:
        refuse(
            "with --resume: a run continues in its folder with its plan", out_dir=out, set=settings
        )
        refuse(
            "with --resume: the run's plan fixes its labels",
            classes=classes, ignore_index=ignore_index, merge_rare=merge_rare, normalize=normalize,
            palette=palette,
        )  # fmt: skip
    elif out is None:
        raise typer.BadParameter(f"{modes[0]} needs --out-dir RUN (the run folder to create)")
    if auto is not None:
        refuse("with --auto: DATA is --auto's value", data=data)
    extra = _user_callbacks(callbacks or [])  # before any training: a bad module is a usage error
    if auto is not None:
        opts = planner_kwargs(*[planning[k] for k in _PLANNER_KEYS]) | {"data_options": labels}
        budgets = (opts, not no_cache, max_epochs, max_steps, settings or [], callbacks or [])
        _train_auto(auto, out, val, images or "images", masks or "masks", budgets, extra, json_out)
        return

    import trainer.train.fit as fit
    from planner.app.cli_options import apply_settings
    from trainer.plan import load_plan
    from trainer.train.progress import RichProgress

    p = load_plan(resume / "plan.json" if resume is not None else plan)
    if labels:
        p = with_data(p, labels)
    if settings:
        p = apply_settings(p, settings)
    steps = p.micro_batch * p.replicas
    progress = RichProgress(epochs=max_epochs or p.epochs, console=err, images_per_step=steps)
    with _fresh_process_on_step_down(data, val, json_out, callbacks or []):
        try:
            common = dict(
                data_path=_s(data),
                val_path=_s(val),
                max_epochs=max_epochs,
                max_steps=max_steps,
                callbacks=[progress, *extra],
            )
            if resume is not None:
                result = fit.resume(resume, **common)
            else:
                result = fit.train(p, out, **common)
        finally:
            progress.close()
    _render_train_result(result.metrics, result.run_dir, json_out)


_PLANNER_KEYS = (
    "budget_memory", "budget_time", "backbones", "sizes", "precisions", "effective_batch",
    "headroom", "weights", "devices", "workers",
)  # fmt: skip


def _user_callbacks(specs: list[str]) -> list[Any]:
    """`--callbacks` specs to Keras callbacks; a failure is a usage error (exit 2)."""
    if not specs:
        return []
    from trainer.errors import FitplanError
    from trainer.train.user_callbacks import load_callbacks

    try:
        return load_callbacks(specs)
    except FitplanError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextlib.contextmanager
def _fresh_process_on_step_down(
    data: Path | None, val: Path | None, json_out: bool, callbacks: list[str] = ()
):
    """A GPU step-down (`trainer.train.stepdown`): go on as `train --resume RUN`, exec'd."""
    from trainer.train.stepdown import RestartRequired

    try:
        yield
    except RestartRequired as exc:
        extra = [*(["--data", str(data)] if data else []), *(["--val", str(val)] if val else [])]
        extra += [a for spec in callbacks for a in ("--callbacks", spec)]  # not in plan.json
        argv = [sys.executable, "-m", "planner", "train", "--resume", str(exc.run_path), *extra]
        argv += ["--json"] if json_out else []
        err.print(f"{exc.message}; resuming {exc.run_path}", highlight=False, markup=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)  # a fresh process: a fresh GPU allocator, cuDNN and NCCL


def _progress_after_planning(
    epochs: int, extra: Sequence[Any] = ()
) -> tuple[Callable[[], list[Any]], list[Any]]:
    """The progress display (and `extra` callbacks) for `auto_train`, made once planning is done.

    The display is a Keras callback: importing Keras (TensorFlow, ~0.5 GiB resident)
    before planning would hold that memory in the planning process beside every trial
    child. Returns `(make, made)`: `auto_train` calls `make`; close what `made` holds.
    """
    made: list[Any] = []

    def make() -> list[Any]:
        from trainer.train.progress import RichProgress

        made.append(RichProgress(epochs=epochs, console=err))
        return [made[0], *extra]

    return make, made


def _train_auto(data, out, val, images, masks, budgets, extra, json_out) -> None:
    from planner.app.auto import auto_train
    from planner.app.cli_options import apply_settings
    from trainer.clock import process_start_monotonic

    plan_options, use_cache, max_epochs, max_steps, settings, callback_specs = budgets
    progress_and_extra, made = _progress_after_planning(max_epochs or 0, extra)

    def log(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    restart = _fresh_process_on_step_down(None, None, json_out, callback_specs)
    with restart, contextlib.ExitStack() as stack:
        stack.callback(lambda: [p.close() for p in made])
        result, trained = auto_train(
            data,
            out,
            started_at=process_start_monotonic(),  # the user's clock: imports count too
            val=val,
            images=images,
            masks=masks,
            use_cache=use_cache,
            callbacks=progress_and_extra,
            log=log,
            max_epochs=max_epochs,
            max_steps=max_steps,
            adjust=(lambda p: apply_settings(p, settings)) if settings else None,
            **plan_options,
        )
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
