"""The ``trivox`` command: ``serve`` and ``check``.

Exit status: 0 after a clean shutdown (Ctrl-C included), 2 for a configuration problem
(one line on stderr naming the file and the key), 1 when a listener cannot bind.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import trio

from . import log
from .config import Config, ConfigError, HostPort, load
from .errors import ListenError

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trivox", description="A voice-agent telephony server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (no -c: the embedded default)")
    serve.add_argument("-c", "--config", help="trivox.toml")
    serve.add_argument("--sip-listen", metavar="HOST:PORT", help="override sip.listen")
    serve.add_argument("--audiosocket-listen", metavar="HOST:PORT", help="override audiosocket.listen")
    check = commands.add_parser("check", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True, help="trivox.toml")
    args = parser.parse_args(argv)

    try:
        config = load(args.config)
        if args.command == "serve":
            config = _apply_overrides(config, args)
    except ConfigError as exc:
        print(f"trivox: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        return _check(config)
    return _serve(config)


def _apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    sip, audiosocket = config.sip, config.audiosocket
    if args.sip_listen:
        sip = dataclasses.replace(sip, listen=_address(args.sip_listen, "--sip-listen"))
    if args.audiosocket_listen:
        audiosocket = dataclasses.replace(audiosocket, listen=_address(args.audiosocket_listen,
                                                                       "--audiosocket-listen"))
    return dataclasses.replace(config, sip=sip, audiosocket=audiosocket)


def _address(text: str, flag: str) -> HostPort:
    try:
        return HostPort.parse(text)
    except ValueError as exc:
        raise ConfigError("command line", flag, str(exc)) from None


def _check(config: Config) -> int:
    """Validate the file, then load what it names (dialog handler, providers)."""
    from .server import prepare

    try:
        prepare(config)
    except ConfigError as exc:
        print(f"trivox: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{config.source}: OK")
    return 0


def _serve(config: Config) -> int:
    from .server import prepare, serve

    log.setup(config.log.level)
    try:
        prepared = prepare(config)
    except ConfigError as exc:
        print(f"trivox: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    status = 0
    try:
        try:
            trio.run(serve, config, prepared)
        except* ListenError as group:
            print(f"trivox: {group.exceptions[0]}", file=sys.stderr)
            status = 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handler was up
        pass
    return status


if __name__ == "__main__":
    sys.exit(main())
