"""The `journeystream` command: worker, migrate, simulate, replay, demo, erase, pseudonym, config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from journeystream.config import Settings, load_alert_rules, settings_table
from journeystream.errors import JourneystreamError

if TYPE_CHECKING:
    from journeystream.simulate import SimConfig

log = logging.getLogger("journeystream")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
    except JourneystreamError as exc:
        print(f"journeystream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="journeystream", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the stream worker")
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser("migrate", help="create the ClickHouse database and tables (idempotent)")
    migrate.set_defaults(run=_migrate)

    simulate = commands.add_parser(
        "simulate", help="send simulated multichannel traffic to Kafka or a JSONL file"
    )
    _simulate_arguments(simulate)
    simulate.set_defaults(run=_simulate)

    replay = commands.add_parser(
        "replay", help="run a JSONL file through the same core into ClickHouse (backfill)"
    )
    replay.add_argument("file", type=Path, help="one event (JSON) per line")
    replay.add_argument(
        "--close-until",
        default=None,
        help="after the file, move the watermark to this time ('now' or RFC 3339) so journeys whose "
        "deadline passed by then close; default: leave them open (no wall clock is used)",
    )
    replay.set_defaults(run=_replay)

    demo = commands.add_parser(
        "demo", help="local broker + worker + simulator, with a live summary; Ctrl-C stops all"
    )
    demo.add_argument("--rate", type=float, default=300.0, help="simulated messages per second")
    demo.add_argument("--customers", type=int, default=5000)
    demo.add_argument("--invalid-share", type=float, default=0.01)
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    demo.set_defaults(run=_demo)

    erase = commands.add_parser(
        "erase",
        help="erase a customer (and the anonymous ids merged into it) from ClickHouse and the workers' "
        "state; see Privacy",
    )
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("customer_id", nargs="?", help="the customer id, raw or its pseudonym token")
    who.add_argument("--anonymous-id", help="a visitor's anonymous id (raw or token) instead")
    erase.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the workers to report (default 120); the request stays queued after",
    )
    erase.set_defaults(run=_erase)

    pseudonym = commands.add_parser(
        "pseudonym", help="print the token that stands for an id (JOURNEYSTREAM_PSEUDONYM_KEY_FILE)"
    )
    pseudonym.add_argument("id", help="a customer, anonymous, session or agent id as producers send it")
    pseudonym.set_defaults(run=_pseudonym)

    config = commands.add_parser("config", help="show the effective settings (secrets masked)")
    config.add_argument("--markdown", action="store_true", help="print the settings table of the README")
    config.set_defaults(run=_config)
    return parser


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to", default="kafka", help="'kafka' (the interactions topic) or a .jsonl file path"
    )
    parser.add_argument(
        "--events", type=int, default=10_000, help="messages to send (valid + invalid + duplicates)"
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible"
    )
    parser.add_argument("--start", default="now", help="event time of the first scenario: 'now' or RFC 3339")
    parser.add_argument(
        "--events-per-second",
        type=float,
        default=None,
        help="density of the simulated timeline in event time (default: --rate, or 200)",
    )
    parser.add_argument("--invalid-share", type=float, default=0.0)
    parser.add_argument("--duplicate-share", type=float, default=0.0)
    parser.add_argument("--max-disorder-ms", type=int, default=0)


def _worker(args: argparse.Namespace) -> int:
    from mode import Worker
    from prometheus_client import CollectorRegistry

    from journeystream.metrics import Metrics
    from journeystream.runtime.app import WorkerService
    from journeystream.runtime.processes import Helpers, remove_retired_helpers
    from journeystream.runtime.topics import ensure_topics
    from journeystream.sinks.clickhouse import ClickHouseWriter
    from journeystream.sinks.store import StoreTarget, migrate

    settings = Settings.from_env()
    log.info("settings: %s", settings.describe())
    rules = load_alert_rules(settings)  # a broken rules file stops the worker before it starts
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    retired = remove_retired_helpers(Path(settings.data_dir), settings.processes)
    if retired:
        log.info("deleted the data of helpers this worker no longer has: %s", ", ".join(retired))
    asyncio.run(ensure_topics(settings))  # reaches the broker first: one line and exit 2 if it cannot
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        writer.call(lambda client: migrate(client, settings, writer.database))
        asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop
        helpers = Helpers(settings, writer, rules) if settings.processes > 1 else None
        service = WorkerService(settings, writer, Metrics(CollectorRegistry()), rules, helpers=helpers)
        worker = Worker(service, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit:  # how mode's worker ends, even after a clean stop
            pass
        except Exception:  # logged by the worker
            return 1
    finally:
        writer.close()
    return 1 if service.failed else 0


def _migrate(args: argparse.Namespace) -> int:
    from journeystream.sinks.clickhouse import ClickHouseWriter
    from journeystream.sinks.store import StoreTarget, migrate

    settings = Settings.from_env()
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    try:
        count = writer.call(lambda client: migrate(client, settings, writer.database))
    finally:
        writer.close()
    print(f"database {writer.database}: {count} statements applied")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from journeystream import simulate
    from journeystream.kafka_options import kafka_options
    from journeystream.runtime.topics import ensure_topics

    config = sim_config(args)
    messages = simulate.generate(config)
    if args.to != "kafka":
        count = simulate.write_jsonl(messages, Path(args.to))
        print(f"wrote {count} messages to {args.to}")
        return 0
    settings = Settings.from_env()
    asyncio.run(ensure_topics(settings, [settings.topic_interactions]))  # checks the connection first
    rate = args.rate or None
    count = asyncio.run(
        simulate.send_to_kafka(
            messages,
            settings.kafka_bootstrap,
            settings.topic_interactions,
            rate,
            client_options=kafka_options(settings),
        )
    )
    print(f"sent {count} messages to {settings.topic_interactions}")
    return 0


def sim_config(args: argparse.Namespace) -> SimConfig:
    from journeystream.simulate import SimConfig

    start = datetime.now(UTC) if args.start == "now" else datetime.fromisoformat(args.start)
    density = args.events_per_second or args.rate or 200.0
    return SimConfig(
        seed=args.seed,
        customers=args.customers,
        events=args.events,
        start_ms=int(start.timestamp() * 1000),
        events_per_second=density,
        invalid_share=args.invalid_share,
        duplicate_share=args.duplicate_share,
        max_disorder_ms=args.max_disorder_ms,
    )


def _replay(args: argparse.Namespace) -> int:
    from journeystream.core.decode import parse_time
    from journeystream.replay import replay_file

    close_until = None
    if args.close_until == "now":
        close_until = int(datetime.now(UTC).timestamp() * 1000)
    elif args.close_until is not None:
        close_until = parse_time(args.close_until)
    summary = asyncio.run(replay_file(args.file, Settings.from_env(), close_until))
    print(
        f"replayed {summary.lines} lines in {summary.seconds:.1f}s: {summary.valid} valid, "
        f"{summary.rejected} rejected; {summary.journeys_written} journey versions, "
        f"{summary.irritants_written} irritants written"
    )
    if expired := summary.expired_line():
        print(f"warning: {expired}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from journeystream.demo import DemoOptions, run_demo

    options = DemoOptions(args.rate, args.customers, args.invalid_share, args.duration)
    return run_demo(options)


def _erase(args: argparse.Namespace) -> int:
    from journeystream.core.identity import anonymous_key
    from journeystream.erasure import ErasureReport, erase_through_workers, id_hash, stored_id, worker_state

    settings = Settings.from_env()
    anonymous = args.anonymous_id is not None
    stored = stored_id(settings, args.anonymous_id if anonymous else args.customer_id)
    state = asyncio.run(worker_state(settings))
    if state == "none":  # no worker state anywhere (as after a replay): ClickHouse only
        return _erase_rows_directly(settings, stored, anonymous, state, complete=True)
    if state.startswith("NOT checked"):
        return _erase_rows_directly(settings, stored, anonymous, state, complete=False)
    key = anonymous_key(stored) if anonymous else stored
    answer = asyncio.run(erase_through_workers(settings, key, args.timeout))
    if answer.primary is None:
        waiting = (
            f"NOT erased: no worker answered within {args.timeout:g}s; request {answer.request} stays "
            f"on {settings.topic_control} and the next worker of {settings.app_id} carries it out"
        )
        return _erase_rows_directly(settings, stored, anonymous, waiting, complete=False)
    report = ErasureReport(id_hash(stored), "anonymous" if anonymous else "customer")
    answer.fill(report)
    print("\n".join(report.lines()))
    return 0 if report.complete else 1


def _erase_rows_directly(
    settings: Settings, stored: str, anonymous: bool, worker_state: str, *, complete: bool
) -> int:
    """The ClickHouse part done by this command (no worker holds the store)."""
    from journeystream.erasure import erase_rows, record
    from journeystream.sinks.clickhouse import ClickHouseWriter
    from journeystream.sinks.store import StoreTarget, migrate

    try:
        writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    except Exception as exc:  # chDB refuses a folder another process (a worker) holds
        print(f"worker state: {worker_state}", file=sys.stderr)
        print(
            f"journeystream: cannot open ClickHouse ({exc}): a worker holds the embedded store and "
            "will delete the rows when it carries the request out",
            file=sys.stderr,
        )
        return 1
    try:
        writer.call(lambda client: migrate(client, settings, writer.database))
        report = writer.call(lambda client: erase_rows(client, writer.database, stored, anonymous=anonymous))
        report.worker_state = worker_state
        report.worker_complete = complete
        writer.call(lambda client: record(client, writer.database, report))
    finally:
        writer.close()
    print("\n".join(report.lines()))
    return 0 if report.complete else 1


def _pseudonym(args: argparse.Namespace) -> int:
    from journeystream.config import pseudonyms
    from journeystream.errors import ConfigError

    tokens = pseudonyms(Settings.from_env())
    if tokens is None:
        raise ConfigError("JOURNEYSTREAM_PSEUDONYM_KEY_FILE is not set: ids are stored as they come")
    print(tokens.token(args.id))
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_table())
        return 0
    for name, value in Settings.from_env().describe().items():
        print(f"{name} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
