"""`onion-router --config FILE [--host H --port P]`; `onion-router calibrate --help`;
`onion-router train --help`."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from onion_contract.router_config import ConfigError, load_config
from onion_router.app import create_app
from onion_router.learned import ModelFileError


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["calibrate"]:  # a subcommand; `onion-router --config FILE` serves
        from onion_router.calibrate import main as calibrate

        return calibrate(args_in[1:])
    if args_in[:1] == ["train"]:
        from onion_router.train import main as train

        return train(args_in[1:])
    parser = argparse.ArgumentParser(prog="onion-router", description=__doc__)
    parser.add_argument("--config", required=True, help="router config YAML")
    parser.add_argument("--host", help="overrides listen.host")
    parser.add_argument("--port", type=int, help="overrides listen.port")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    # httpx2 logs every upstream request at INFO: noise, and work on the hot path.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.root.level))
    try:
        config = load_config(args.config)
        app = create_app(config)
    except (ConfigError, ModelFileError, RuntimeError) as err:
        print(f"onion-router: {err}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.host or config.listen.host,
        port=args.port if args.port is not None else config.listen.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
