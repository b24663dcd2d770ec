"""The options of an offline quality run, shared by ``streamrec eval`` and ``python -m bench.quality``.

They parse into the harness's :class:`~model_export.evaluation.harness.HarnessConfig`; the harness itself takes
no command-line arguments.
"""

from __future__ import annotations

import argparse

from model_export.evaluation.harness import MODELS, TIES, HarnessConfig, train_config


def cold_exposure_option(text: str) -> float:
    """``--cold-exposure``: a share, 0 or more."""
    value = float(text)
    if not value >= 0:  # also refuses nan
        msg = f"must be 0 or more (1.0: equal opportunity for new items; 0: no boost), not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options `streamrec eval` and `python -m bench.quality` share: models, training budget, cold run, device."""
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {','.join(MODELS)}")
    parser.add_argument("--epochs", type=int, help="epochs of streamrec and sasrec-id (default: TrainConfig's)")
    parser.add_argument("--max-seconds", type=float, help="stop each training after this many seconds")
    parser.add_argument("--core", type=int, default=5, help="drop users and items with fewer events (1: keep all)")
    parser.add_argument("--cold-fraction", type=float, default=0.1, help="share of the items hidden from the cold run")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold run (cold_recall@10 is null)")
    parser.add_argument("--device", default="cpu", help="torch device of the trainings (cuda where torch sees a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="trainings per model: seed..seed+N-1 (headline: 3)")
    parser.add_argument("--ties", choices=TIES, default="file",
                        help="equal timestamps: file order, or quicksort (the HSTU repositories')")
    parser.add_argument("--set", dest="train_overrides", action="append", default=[], metavar="KEY=JSON",
                        help="a training setting of the neural models, e.g. lr=0.001 or model.dropout=0.3 (repeatable)")
    parser.add_argument("--validation-only", action="store_true",
                        help="measure the validation split only (for choosing settings: no test case is read)")
    parser.add_argument("--max-len", type=int, help="recent items the neural models read (default: ModelConfig's)")
    parser.add_argument("--batch-size", type=int, help="training windows per batch (default: TrainConfig's)")
    parser.add_argument("--curve-every", type=int, default=0, help="log validation metrics every N epochs (0: never)")
    parser.add_argument(
        "--cold-exposure",
        type=cold_exposure_option,
        help="new items' recall@k over known items' (default: TrainConfig's 1.0; 0: no boost)",
    )


def run_options(args: argparse.Namespace) -> tuple[list[str], HarnessConfig]:
    """The models and the config of :func:`add_run_options`' parsed options.

    Raises:
        ValueError: an unknown model name.
    """
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        msg = f"unknown model(s) {', '.join(unknown)}; use some of {','.join(MODELS)}"
        raise ValueError(msg)
    overrides = []
    for item in args.train_overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            msg = f"--set wants KEY=JSON, got {item!r}"
            raise ValueError(msg)
        overrides.append((key.strip(), raw.strip()))
    if args.seeds < 1:
        msg = f"--seeds must be 1 or more, got {args.seeds}"
        raise ValueError(msg)
    cfg = HarnessConfig(
        core=args.core,
        cold_fraction=0.0 if args.no_cold else args.cold_fraction,
        seed=args.seed,
        epochs=args.epochs,
        max_seconds=args.max_seconds,
        device=args.device,
        max_len=args.max_len,
        batch_size=args.batch_size,
        curve_every=args.curve_every,
        cold_exposure=args.cold_exposure,
        seeds=args.seeds,
        ties=args.ties,
        train_overrides=tuple(overrides),
        test=not args.validation_only,
    )
    try:
        train_config(cfg)  # refuses an unknown or malformed --set now, not after an hour of training
    except (ValueError, TypeError) as exc:
        msg = f"--set: {exc}"
        raise ValueError(msg) from exc
    return models, cfg
