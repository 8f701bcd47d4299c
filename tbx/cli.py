"""The ``tbx`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from config.settings import ConfigError, Settings, load_settings, read_environment, warnings_for
from schemas.subjects import ACTORS, PARTITIONED


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tbx",
        description="trading-bot-execution: risk-checked order routing, fill tracking and books over NATS.",
        epilog="Settings come from environment variables, then a .env file in the working directory, then an "
        "optional TOML file (see .env.example).",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with settings (environment variables and ./.env win)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser(
        "run",
        help="everything: NATS (embedded unless NATS_URL), all actors and the gateway, in RUN_PROCESSES worker "
        "processes (default: 2 with at least 2 cores; 1: all in this one process)",
        description="Start NATS (an embedded nats-server unless NATS_URL is set), every actor and the REST gateway. "
        "RUN_PROCESSES (auto, the default: 2 when the machine has at least 2 usable cores, else 1; or 1..64) worker "
        "processes run them, split by measured CPU weight and supervised by this one (a worker that dies is started "
        "again); RUN_PROCESSES=1 runs everything in this one process. Ctrl-C or SIGTERM stops everything within 5 s.",
    )
    r.add_argument("--worker", metavar="K/N", type=_worker_arg, help=argparse.SUPPRESS)  # started by `tbx run`
    a = sub.add_parser("actor", help="one actor alone, against NATS_URL")
    a.add_argument("name", choices=ACTORS)
    a.add_argument(
        "--partition",
        type=int,
        metavar="K",
        help="the partition (0..PARTITIONS-1) a partitioned actor (signal-intake, order-router, fill-tracker) "
        "serves; the same as PARTITION=K",
    )
    sub.add_parser("gateway", help="the REST gateway alone, against NATS_URL")
    sub.add_parser("config", help="print the effective settings (secrets hidden) and exit")
    sub.add_parser(
        "status",
        help="is it running? prints the NATS URL of `tbx run` (DATA_DIR/nats.url) and GET /api/health; "
        "exit 0 healthy, 1 unhealthy, 3 not running",
    )
    return p


def _worker_arg(raw: str) -> tuple[int, int]:
    k, _, n = raw.partition("/")
    try:
        out = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, not {raw!r}") from None
    if not 1 <= out[0] <= out[1]:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, not {raw!r}")
    return out


def _partition_of_actor(settings: Settings, name: str, partition: int | None) -> Settings:
    """`tbx actor NAME [--partition K]`: the settings of that one instance. A partitioned actor with PARTITIONS > 1
    serves one partition, named by --partition or PARTITION (neither: a config error naming PARTITION)."""
    if partition is not None:
        if not 0 <= partition < settings.PARTITIONS:
            raise ConfigError(
                f"--partition {partition} is not allowed with PARTITIONS={settings.PARTITIONS}: "
                f"expected 0..{settings.PARTITIONS - 1}"
            )
        settings = msgspec.structs.replace(settings, PARTITION=partition)
    if name in PARTITIONED and settings.PARTITIONS > 1 and settings.PARTITION is None:
        raise ConfigError(
            f"PARTITION is not set: with PARTITIONS={settings.PARTITIONS} a {name} serves one partition: set "
            f"PARTITION=0..{settings.PARTITIONS - 1} or run `tbx actor {name} --partition K` (`tbx run` runs them all)"
        )
    return settings


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.Runner()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run" and args.worker is not None:
        return _worker(args.worker)
    try:
        env, env_warnings = read_environment(config_file=args.config)
        settings = load_settings(env, config_file=args.config)
    except ConfigError as e:
        print(f"tbx: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "actor":
        try:
            settings = _partition_of_actor(settings, args.name, args.partition)
        except ConfigError as e:
            print(f"tbx: config error: {e}", file=sys.stderr)
            return 2
    if args.command == "config":
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(settings.redacted())).decode() + "\n")
        return 0
    if args.command == "status":
        from tbx.status import status

        return status(settings)

    from loguru import logger

    from tbx.logs import setup_logging
    from tbx.runner import ACTOR_CLASSES, serve

    setup_logging(settings.LOG_LEVEL, json=settings.NODE_ENV == "production")
    for w in [*env_warnings, *warnings_for(settings)]:
        logger.warning(w)
    if args.command == "run" and settings.RUN_PROCESSES > 1:
        from tbx.workers import run_workers

        return _run(lambda: run_workers(settings, settings.RUN_PROCESSES))
    if args.command == "run":
        names, gateway, embedded = list(ACTOR_CLASSES), True, True
    elif args.command == "actor":
        names, gateway, embedded = [args.name], False, False
    else:
        names, gateway, embedded = [], True, False
    return _run(lambda: serve(settings, names, with_gateway=gateway, embedded_ok=embedded))


def _worker(which: tuple[int, int]) -> int:
    """`tbx run --worker K/N`: one of the worker processes of `tbx run` (tbx/workers.py); its share on stdin."""
    from loguru import logger

    from tbx.logs import setup_logging
    from tbx.runner import ACTOR_CLASSES, serve
    from tbx.workers import read_share

    try:
        if sys.stdin.isatty():
            raise ConfigError("--worker: a worker is started by `tbx run` (its share on stdin), not by hand")
        share = read_share(sys.stdin.buffer.read())
        if (share.worker, share.workers) != which:
            raise ConfigError(
                f"--worker {which[0]}/{which[1]}: the share on stdin is worker {share.worker}/{share.workers}'s"
            )
    except ConfigError as e:
        print(f"tbx: config error: {e}", file=sys.stderr)
        return 2
    settings = share.settings
    setup_logging(settings.LOG_LEVEL, json=settings.NODE_ENV == "production")
    logger.configure(extra={"actor": f"tbx[{share.worker}/{share.workers}]", "request_id": ""})
    return _run(
        lambda: serve(
            settings,
            list(ACTOR_CLASSES),
            with_gateway="gateway" in share.parts,
            embedded_ok=False,
            only=share.parts,
            worker_of_embedded=share.embedded,
        )
    )


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main()`` on the event loop; what ends start-up is one line and an exit status."""
    from loguru import logger

    from actors.venues.base import VenueStartError
    from bus.embedded import PortInUse
    from bus.errors import BusUnavailable, NatsRefused

    try:
        with _event_loop_runner() as runner:
            return runner.run(main())
    except PortInUse as e:
        print(
            f"tbx: config error: NATS_PORT={str(e.port)!r} is not allowed: the port is already in use on {e.host} "
            "(another nats-server or program listens there); stop it, choose another NATS_PORT, or unset "
            "NATS_PORT to take a free port",
            file=sys.stderr,
        )
        return 2
    except BusUnavailable as e:
        logger.error(str(e))
        return 1
    except (ConfigError, NatsRefused) as e:  # (found by a part at its start: as fatal as one found before)
        print(f"tbx: config error: {e}", file=sys.stderr)
        return 2
    except VenueStartError as e:  # the live venue's start check: one line naming what failed
        print(f"tbx: cannot start: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        logger.error("cannot start: {}", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
