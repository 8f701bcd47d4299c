"""The ``tbx`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys

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
    sub.add_parser("run", help="everything in one process: NATS (embedded unless NATS_URL), all actors, gateway")
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

    from actors.venues.base import VenueStartError
    from bus.embedded import PortInUse
    from bus.errors import BusUnavailable, NatsRefused
    from tbx.logs import setup_logging
    from tbx.runner import ACTOR_CLASSES, serve

    setup_logging(settings.LOG_LEVEL, json=settings.NODE_ENV == "production")
    for w in [*env_warnings, *warnings_for(settings)]:
        logger.warning(w)
    if args.command == "run":
        names, gateway, embedded = list(ACTOR_CLASSES), True, True
    elif args.command == "actor":
        names, gateway, embedded = [args.name], False, False
    else:
        names, gateway, embedded = [], True, False
    try:
        with _event_loop_runner() as runner:
            return runner.run(serve(settings, names, with_gateway=gateway, embedded_ok=embedded))
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
