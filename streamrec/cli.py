"""The ``streamrec`` command: the local stack, producers, training, the model registry, the job and the API.

    streamrec up | down | status [--json]
    streamrec produce --user U --item I [--type click] | replay --dataset ml-100k [--rate N] [--limit N]
    streamrec train --dataset ml-100k [--promote] | models list [--json] | register DIR | promote V | rollback
    streamrec trainer [--once] [--interval-s N] [--min-new-events M]
    streamrec eval --dataset ml-1m --protocol loo|time [--json] [--models streamrec,popularity,...] [--core 5]
    streamrec job start [--cluster URL] [--from-savepoint PATH] | rebuild | stop [--savepoint [DIR]] | status [--json]
    streamrec serve [--port N] | demo
    streamrec users forget USER_ID [--json]
    streamrec import --events FILE [--items FILE] [--user-col C ...] [--dry-run] [--rejects FILE] [--json]
    streamrec dlq list [--since 1h] [--reason TEXT] [--limit N] [--json] | replay [...] [--set F=JSON] [--dry-run]

Every command reads the one configuration (``--config``, ``$STREAMREC_CONFIG``, ``STREAMREC_*`` variables).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.config import ConfigError, Settings, kafka_client_options, load_config, secret_value
from streamrec.events import Event, InvalidRecordError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import up

    up(settings, with_cluster=args.cluster, redis_users=_redis_users(settings))
    return 0


def _redis_users(settings: Settings) -> list[Any]:
    """The least-privilege Redis ACL users of the config: redis.username (writers), api.redis_username (reads)."""
    from infra.redis_server import AclUser, AclUserError
    from serving.store import API_ACL_RULES, JOB_ACL_RULES

    users = []
    for name, password, rules in (
        (settings.redis.username, settings.redis.password, JOB_ACL_RULES),
        (settings.api.redis_username, settings.api.redis_password, API_ACL_RULES),
    ):
        if name:
            users.append(AclUser(name, secret_value(password) or "", rules))
    if len({u.name for u in users}) < len(users):
        raise AclUserError("redis.username and api.redis_username must differ: the API's user is read-only")
    return users


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import down

    down(settings)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import status

    st = status(settings)
    if args.json:
        _print_json(st)
    else:
        for name, info in st.items():
            where = info.get("bootstrap") or info.get("url") or info.get("rest_url") or info.get("mode")
            state = "running" if info["running"] else "stopped"
            if name == "flink":  # the MiniCluster lives inside the job's process: report the job
                state = "running" if info["running"] or info["job_running"] else "stopped"
                where = f"{where} (interest job {'running' if info['job_running'] else 'not running'})"
            print(f"{name:7} {state:8} {where}")
    return 0


def _producer(settings: Settings) -> Any:
    from jobs.producer import EventProducer

    k = settings.kafka
    return EventProducer(k.bootstrap, k.events_topic, k.items_topic, **kafka_client_options(k))


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    event: dict[str, Any] = {
        "user_id": args.user,
        "item_id": args.item,
        "type": args.type,
        "ts": args.ts if args.ts is not None else int(time.time() * 1000),
    }
    if args.value is not None:
        event["value"] = args.value
    if args.scenario:
        event["scenario"] = args.scenario
    with _producer(settings) as p:
        ev = p.send(event)
    print(f"sent {ev.to_json().decode()} to {settings.kafka.events_topic}")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.producer import replay
    from model_export.data.datasets import load_dataset

    data = load_dataset(args.dataset)
    with _producer(settings) as p:
        if not args.no_items:
            for item in data.items:
                p.send_item(item)
            print(f"sent {len(data.items)} items to {settings.kafka.items_topic}")
        n = replay(p, data.events, rate=args.rate, limit=args.limit, total=len(data.events))
    print(f"sent {n} events of {args.dataset} to {settings.kafka.events_topic} in event-time order")
    return 0


# Benchmark modules that are helpers of the others, not benchmarks.
BENCH_HELPERS = frozenset({"__init__", "audit", "results"})


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from model_export.data.datasets import load_dataset
    from model_export.data.event_log import read_events, read_items
    from model_export.pipeline import train_and_export_events
    from model_export.train import TrainConfig
    from streamrec.publish import publish

    k = settings.kafka
    if args.from_kafka:
        events = read_events(k.bootstrap, k.events_topic, **kafka_client_options(k))
        # Item texts feed the text tower; items without a record are learned from their ids alone.
        catalog = read_items(k.bootstrap, k.items_topic, **kafka_client_options(k))
        name = "events-log"
        print(f"read {len(events)} events and {len(catalog)} items back from {k.events_topic}/{k.items_topic}")
    else:
        data = load_dataset(args.dataset)
        events, catalog = data.events, {str(i["item_id"]): i for i in data.items}
        name = args.dataset
    events = events[: args.max_events] if args.max_events else events
    if not events:
        print(f"error: no events to train on ({name})", file=sys.stderr)
        return 1
    cfg = replace(TrainConfig(), epochs=args.epochs) if args.epochs else TrainConfig()
    if args.max_len:
        cfg = replace(cfg, model=replace(cfg.model, max_len=args.max_len))
    if args.cold_exposure is not None:
        cfg = replace(cfg, cold_exposure=args.cold_exposure)
    artifact = train_and_export_events(
        events, settings.run_dir / "artifacts", name=name, seed=args.seed, config=cfg, catalog=catalog
    )
    version = publish(settings, artifact, promote=args.promote, events=events)
    print(f"registered {version} from {artifact}")
    if args.promote:
        print(f"promoted {version}")
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from streamrec.publish import announce, registry

    reg = registry(settings)
    if args.models_cmd == "list":
        rows = reg.list_versions()
        if args.json:
            _print_json(rows)
        else:
            for row in rows:
                mark = "*" if row["promoted"] else " "
                print(f"{mark} {row['version']}  parent={row['parent']}  {row['path']}")
        return 0
    from model_export.errors import ArtifactError

    try:
        if args.models_cmd == "register":
            print(f"registered {reg.publish(Path(args.dir))}")
            return 0
        version = reg.promote(args.version) if args.models_cmd == "promote" else reg.rollback()
    except ArtifactError as exc:
        # A refusal, not a crash: exit 2 and one line, so that scripts can tell it from other failures.
        print(f"error: refused: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    announce(settings, version)
    print(f"serving {version}")
    return 0


def cmd_trainer(settings: Settings, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from model_export.data.event_log import KafkaEventLog
    from model_export.trainer import run_forever, run_once
    from streamrec.config import TrainerConfig
    from streamrec.publish import announce, registry

    overrides = {"interval_s": args.interval_s, "min_new_events": args.min_new_events}
    try:
        config = TrainerConfig.model_validate(
            {**settings.trainer.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'trainer'}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid trainer options: {fields}", file=sys.stderr)
        return 2
    k = settings.kafka
    log = KafkaEventLog(k.bootstrap, k.events_topic, k.items_topic, client_config=kafka_client_options(k))
    work_dir = settings.run_dir / "trainer"
    work_dir.mkdir(parents=True, exist_ok=True)

    def promoted(version: str, events: Any) -> None:
        announce(settings, version, events)  # the trainer registered and promoted it

    options: dict[str, Any] = {"on_promote": promoted, "work_dir": work_dir, "source": k.events_topic}
    if args.once:
        from kafka.errors import KafkaError

        try:
            run_once(log, registry(settings), config, **options)
        except KafkaError as exc:
            print(f"error: cannot read the event log from Kafka at {k.bootstrap}: {exc}", file=sys.stderr)
            return 1
        finally:
            log.close()
        return 0
    run_forever(log, registry(settings), config, **options)
    return 0


def cmd_job(settings: Settings, args: argparse.Namespace) -> int:
    from jobs import launcher

    if args.job_cmd == "start":
        launcher.start(
            settings, args.config, cluster=args.cluster, resume=not args.fresh, from_savepoint=args.from_savepoint
        )
    elif args.job_cmd == "rebuild":
        launcher.rebuild(settings, args.config, cluster=args.cluster)
    elif args.job_cmd == "stop" and args.savepoint is not None:
        launcher.stop_with_savepoint(settings, args.savepoint or None)
    elif args.job_cmd == "stop":
        launcher.stop(settings)
    else:
        st = launcher.status(settings)
        if args.json:
            _print_json(st)
        else:
            print(
                f"job     {'running' if st['running'] else 'stopped'} {st['mode'] or ''} {st['job_id'] or ''}"
            )
            print(f"        latest checkpoint: {st['checkpoint']}")
            if st.get("savepoint"):
                print(f"        last savepoint: {st['savepoint']}")
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib

    from model_export.evaluation.harness import evaluate_models, prepare, table
    from streamrec.run_options import run_options

    try:
        models, cfg = run_options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data: Any = args.dataset  # a shipped data set's name, or (--from-kafka) the event log read back as a Dataset
    if args.from_kafka:
        from kafka.errors import KafkaError

        from model_export.data.event_log import read_dataset

        k = settings.kafka
        try:
            data = read_dataset(k.bootstrap, k.events_topic, k.items_topic, **kafka_client_options(k))
        except KafkaError as exc:
            print(f"error: cannot read the event log from Kafka at {k.bootstrap}: {exc}", file=sys.stderr)
            return 1
        if not data.events:
            print(f"error: no events to evaluate on {k.events_topic}", file=sys.stderr)
            return 1
        print(f"read {len(data.events)} events and {len(data.items)} items back from {k.events_topic}/"
              f"{k.items_topic}", file=sys.stderr if args.json else sys.stdout)
    # With --json, stdout carries the JSON alone: loading, training and evaluation progress go to stderr.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        out = evaluate_models(prepare(data, cfg.core, cfg.ties), args.protocol, models, cfg)
    if args.json:
        _print_json(out)
    else:
        rows = [{"dataset": out["dataset"], "protocol": args.protocol, "model": n, **m}
                for n, m in out["models"].items()]
        print("\n".join(table(rows, cfg.k)))
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from serving.api import serve

    forget, impressions = _api_senders(settings)
    serve(settings, port=args.port, forget=forget, impressions=impressions)
    return 0


def _api_senders(settings: Settings) -> tuple[Any, Any]:
    """The API's writers: ``user_id -> forget record`` and ``impression -> record sent``.

    One producer, made at the first write request (reads need no Kafka). Both return once Kafka has acknowledged
    the record, so that a 202 means the record is on the topic and a Kafka outage is a 503.
    """
    import threading

    lock = threading.Lock()
    producers: list[Any] = []

    def producer() -> Any:
        with lock:
            if not producers:
                producers.append(_producer(settings))
        return producers[0]

    def forget(user_id: str) -> dict[str, Any]:
        return dict(producer().forget(user_id).to_dict())

    def impressions(ev: Event) -> dict[str, Any]:
        sent = producer().send_impression(
            ev.user_id, ev.items, ts=ev.ts, model_version=ev.model_version, arm=ev.arm, scenario=ev.scenario,
            timeout_s=30.0,  # as long as a forget record may take
        )
        return dict(sent.to_dict())

    return forget, impressions


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from streamrec.importer import run_import

    return run_import(settings, args, _producer)


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    with _producer(settings) as p:
        ev = p.forget(args.user_id)
    out = {"user_id": ev.user_id, "status": "scheduled", "ts": ev.ts, "topic": settings.kafka.events_topic}
    if args.json:
        _print_json(out)
    else:
        print(
            f"scheduled: forget record for user {ev.user_id!r} on {settings.kafka.events_topic}; the job deletes "
            f"rec:/user: and the user's state, and training drops the user's earlier events"
        )
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from jobs.dlq import read_dead_letters, replay

    k = settings.kafka
    try:
        letters = read_dead_letters(settings, since_ms=args.since, reason=args.reason, limit=args.limit)
        if args.dlq_cmd == "list":
            _print_dead_letters(letters, k.dlq_topic, as_json=args.json)
            return 0
        report = replay(settings, letters, fix=dict(args.set) if args.set else None, dry_run=args.dry_run)
    except KafkaError as exc:
        print(f"error: Kafka at {k.bootstrap}: {exc}", file=sys.stderr)
        return 1
    verb = "would send" if report.dry_run else "sent"
    for r in report.replayed:
        key = _shown(r.key, 40) if r.key is not None else "-"
        print(f"{verb} {r.dead_letter} -> {r.topic} key={key}{' (fixed)' if r.fixed else ''} {_shown(r.value, 200)}")
    for s in report.skipped:
        print(f"skipped {s.dead_letter}: {s.reason}")
    for s in report.failed:
        print(f"failed {s.dead_letter}: {s.reason}")
    total = len(report.replayed) + len(report.skipped) + len(report.failed)
    summary = f"{len(report.replayed)} {verb}, {len(report.skipped)} skipped"
    print(f"{summary}{f', {len(report.failed)} failed' if report.failed else ''} of {total} dead letters on "
          f"{k.dlq_topic}{' (dry run: nothing sent)' if report.dry_run else ''}")
    return 1 if report.failed else 0


def _print_dead_letters(letters: Sequence[Any], topic: str, as_json: bool) -> None:
    """``dlq list``: one JSON object a line, or a table with the long fields cut."""
    from datetime import UTC, datetime

    if as_json:
        for letter in letters:
            print(json.dumps(letter.to_dict(), ensure_ascii=False))
        return
    print(f"{'failed_at (UTC)':20}  {'source':28}  {'key':16}  {'reason':40}  original")
    for r in letters:
        failed = "-" if r.failed_at is None else datetime.fromtimestamp(r.failed_at / 1000, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        where = "/".join("?" if v is None else str(v) for v in (r.topic, r.partition, r.offset))
        key = "-" if r.key is None else _shown(r.key, 16)
        print(f"{failed:20}  {_cut(where, 28):28}  {key:16}  {_cut(r.reason, 40):40}  {_shown(r.original, 60)}")
    print(f"{len(letters)} dead letters on {topic}")


def _shown(raw: bytes, width: int) -> str:
    """Bytes for a terminal: UTF-8 text with control characters escaped (a record may carry escape sequences)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return f"<{len(raw)} bytes, not UTF-8>"
    return _cut("".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text), width)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _since_option(text: str) -> int:
    """``--since 10m|2h|1d|ISO`` -> epoch ms (an argparse type: a bad value is a usage error, exit 2)."""
    from jobs.dlq import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _set_option(text: str) -> tuple[str, Any]:
    """``--set FIELD=JSON_VALUE`` -> (field, value); ``null`` removes the field."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        msg = f"--set {text!r}: expected FIELD=JSON_VALUE, e.g. ts=1700000000000"
        raise argparse.ArgumentTypeError(msg)
    try:
        return name.strip(), json.loads(raw)
    except ValueError:
        msg = f"--set {text!r}: {raw!r} is not JSON (a string needs quotes: {name}='\"{raw}\"')"
        raise argparse.ArgumentTypeError(msg) from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        msg = f"expected a positive integer, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return n


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    import subprocess

    from streamrec.config import PROJECT_ROOT

    available = sorted(p.stem for p in (PROJECT_ROOT / "bench").glob("*.py") if p.stem not in BENCH_HELPERS)
    if args.name not in available:
        print(f"error: no benchmark {args.name!r}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    # argparse.REMAINDER takes everything after NAME (`--json` too) and keeps the "--" that separates the
    # benchmark's own options when something precedes it: the benchmark must not see that separator.
    rest = list(args.rest)
    if "--" in rest:
        rest.remove("--")
    # `python -m bench.NAME` from the checkout: bench/ is a package of the repository, not of the install.
    command = [sys.executable, "-m", f"bench.{args.name}", *(["--json"] if args.json else []), *rest]
    env = {**os.environ, **({"STREAMREC_CONFIG": str(Path(args.config).resolve())} if args.config else {})}
    return subprocess.call(command, cwd=PROJECT_ROOT, env=env)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    if args.loop:
        from streamrec.demo_loop import run_loop_demo

        return run_loop_demo(settings, args)
    from streamrec.demo import run_demo

    return run_demo(settings, args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its subcommands are a contract: see docs/architecture.md)."""
    p = argparse.ArgumentParser(prog="streamrec", description="streaming real-time recommender")
    p.add_argument("--config", help="YAML config file (default: $STREAMREC_CONFIG, then built-in defaults)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_stack_commands, _event_commands, _model_commands, _job_commands, _read_side_commands,
                _tool_commands, _dlq_commands):
        add(sub)
    return p


def _stack_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The local stack: ``up``, ``down``, ``status``."""
    s = sub.add_parser("up", help="start the local stack (Kafka, Redis; --cluster adds a standalone Flink)")
    s.add_argument("--cluster", action="store_true", help="also start a JobManager + TaskManager")
    s.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the local stack").set_defaults(func=cmd_down)
    s = sub.add_parser("status", help="show the local stack")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)


def _event_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """What goes on the events topic: ``produce``, ``replay``, ``users forget``, ``import``."""
    s = sub.add_parser("produce", help="send one event")
    s.add_argument("--user", required=True)
    s.add_argument("--item", required=True)
    s.add_argument("--type", default="click")
    s.add_argument("--ts", type=int, help="event time, epoch ms (default: now)")
    s.add_argument("--value", type=float)
    s.add_argument("--scenario")
    s.set_defaults(func=cmd_produce)
    s = sub.add_parser("replay", help="stream a data set through Kafka in event-time order")
    s.add_argument("--dataset", required=True)
    s.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    s.add_argument("--limit", type=int)
    s.add_argument("--no-items", action="store_true", help="do not send the catalog to the items topic")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("users", help="users' data: the right to be forgotten")
    usub = s.add_subparsers(dest="users_cmd", required=True)
    u = usub.add_parser(
        "forget",
        help="forget a user: a `forget` record on the events topic (keyed by the user, after their events); the job "
        "clears the user's state and Redis keys, and training drops the user's earlier events",
    )
    u.add_argument("user_id")
    u.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_users)

    from streamrec.importer import add_import_options

    s = sub.add_parser(
        "import",
        help="validate a file of your own events (and items) and send the good rows to the topics",
        description="Exit status: 0 every row sent, 3 some rows rejected (each on stderr; the others sent), "
        "2 unusable input (a missing file or column, an unknown format), 1 Kafka failed.",
    )
    add_import_options(s)
    s.set_defaults(func=cmd_import)


def _model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The learning side: ``train``, ``models``, ``trainer``, ``eval``."""
    from streamrec.run_options import add_run_options, cold_exposure_option

    s = sub.add_parser("train", help="train, evaluate, export and register a model version")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a shipped data set: ml-100k, ml-1m")
    src.add_argument("--from-kafka", action="store_true", help="the events topic, read back from Kafka")
    s.add_argument("--promote", action="store_true")
    s.add_argument("--epochs", type=int)
    s.add_argument("--max-len", type=int, help="recent items the model reads (default 50; keep job.recent_items >= it)")
    s.add_argument(
        "--cold-exposure",
        type=cold_exposure_option,
        help="new items' top-10 recall over known items' (default 1.0: equal; 0: no boost)",
    )
    s.add_argument("--max-events", type=int)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("models", help="the model registry")
    msub = s.add_subparsers(dest="models_cmd", required=True)
    m = msub.add_parser("list")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("register", help="verify an artifact and add it; refused (exit 2) if corrupt or incompatible")
    m.add_argument("dir")
    m = msub.add_parser("promote", help="put a version in service; refused (exit 2) if its files are corrupt")
    m.add_argument("version", help="a version, or 'latest'")
    msub.add_parser("rollback")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser(
        "trainer",
        help="the periodic trainer: fine-tune the serving model on new events, gate, register, promote",
        description="Exit status: 0 for any decision (promoted, refused, skipped), 1 if a run fails, "
        "2 for invalid options. Settings: the config's trainer section.",
    )
    s.add_argument("--once", action="store_true", help="one run, then exit (cron, Kubernetes CronJob)")
    s.add_argument("--interval-s", type=float, help="a run is due this often (default: trainer.interval_s)")
    s.add_argument(
        "--min-new-events", type=int, help="... or once this many records arrived (default: trainer.min_new_events)"
    )
    s.set_defaults(func=cmd_trainer)

    s = sub.add_parser(
        "eval",
        help="offline evaluation: our model and the baselines, full ranking, seen items excluded",
        description="Main run: the literature protocol after a k-core filter (--core). Cold run: the same cases, "
        "trained again with every event of a seeded 10%% of the items hidden (--cold-fraction, --no-cold).",
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a shipped data set: ml-100k, ml-1m")
    src.add_argument("--from-kafka", action="store_true", help="the retained events and items topics, read back")
    s.add_argument("--protocol", choices=["loo", "time"], default="loo")
    add_run_options(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)


def _job_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The interest job: ``job start|stop|status``."""
    s = sub.add_parser("job", help="the interest job")
    jsub = s.add_subparsers(dest="job_cmd", required=True)
    j = jsub.add_parser("start")
    j.add_argument("--cluster", help="REST URL of a Flink cluster (default: the embedded MiniCluster)")
    j.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints (default: resume from the latest)")
    j.add_argument(
        "--from-savepoint",
        metavar="PATH",
        help="start from this savepoint (an upgrade: new code or config, the same state)",
    )
    j = jsub.add_parser(
        "rebuild",
        help="rebuild every user's state from the retained events topic into a fresh job (a job version whose "
        "operator graph differs: no savepoint maps onto it)",
    )
    j.add_argument("--cluster", help="REST URL of a Flink cluster (default: the embedded MiniCluster)")
    j = jsub.add_parser("stop")
    j.add_argument(
        "--savepoint",
        nargs="?",
        const="",
        metavar="DIR",
        help="stop with a savepoint (default DIR: flink.savepoint_dir) and print its path; without: cancel",
    )
    j = jsub.add_parser("status")
    j.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_job)


def _read_side_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The read side: ``serve``, the HTTP API for front-ends."""
    s = sub.add_parser("serve", help="the HTTP API for front-ends")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)


def _tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The tools: ``bench``, ``demo``."""
    s = sub.add_parser("bench", help="a benchmark under bench/ (table + bench/results/NAME.json)")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark itself")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="the whole path on the embedded default")
    s.add_argument("--dataset", default="ml-100k")
    s.add_argument("--limit", type=int, help="events to replay (default: all; $STREAMREC_DEMO_LIMIT)")
    s.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    s.add_argument(
        "--loop",
        action="store_true",
        help="the feedback loop: replay in time order with the periodic trainer running, and show how the "
        "online hit rate and the model version evolve",
    )
    s.add_argument("--rate", type=int, default=250, help="--loop: events/s of the replay after the bootstrap")
    s.add_argument("--bootstrap", type=float, default=0.2, help="--loop: share of the events the first model sees")
    s.set_defaults(func=cmd_demo)


def _dlq_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The dead-letter topic: ``dlq list``, ``dlq replay``."""
    s = sub.add_parser("dlq", help="the dead-letter topic (kafka.dlq_topic): list dead letters, replay them")
    dsub = s.add_subparsers(dest="dlq_cmd", required=True)
    for name, help_text in (
        ("list", "the dead letters, oldest failure first"),
        ("replay", "re-send dead letters to their source topic (original key and headers, plus "
         "streamrec.replayed-from), optionally fixed"),
    ):
        d = dsub.add_parser(name, help=help_text)
        d.add_argument(
            "--since", type=_since_option, help="failed since: a duration (10m, 2h, 1d) or an ISO time (UTC)"
        )
        d.add_argument("--reason", help="the reason contains this (case-insensitive)")
        d.add_argument("--limit", type=_positive_int, help="at most this many (the oldest first)")
        if name == "list":
            d.add_argument("--json", action="store_true", help="one JSON object a line")
        else:
            d.add_argument(
                "--set",
                action="append",
                type=_set_option,
                metavar="FIELD=JSON_VALUE",
                help="set a top-level field of each original (null removes it); records that are not a JSON "
                "object are skipped; repeatable",
            )
            d.add_argument("--dry-run", action="store_true", help="print what would be sent; send nothing")
    s.set_defaults(func=cmd_dlq)


# Our packages log progress (training epochs, trainer decisions, exports) at INFO; other libraries' only warnings.
OUR_LOGGERS = ("bench", "infra", "jobs", "model_export", "serving", "streamrec")


def configure_logging(level: int = logging.INFO) -> None:
    """Log records to stderr as plain lines, ours from ``level``, other libraries' warnings only.

    stdout stays the command's own output, so that ``--json`` output is parseable.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrec`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = load_config(args.config)
        return int(args.func(settings, args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI edge: one clear line, not a traceback
        from infra.process import ServiceError
        from jobs.errors import JobError
        from model_export.errors import ModelExportError

        if isinstance(exc, ServiceError | JobError | ModelExportError | InvalidRecordError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
