"""``sealgate`` command line (SPEC §6): thin; the work is in the modules."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook.errors import SealgateError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealgate", description="Admission webhook that admits only trusted images."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the webhook over HTTPS")
    serve.add_argument("--host", help="address to listen on (SEALGATE_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (SEALGATE_PORT, default 8443)")
    serve.add_argument("--policies", type=Path, help="policy directory (SEALGATE_POLICIES)")
    serve.add_argument("--cert", type=Path, help="TLS certificate PEM (SEALGATE_CERT)")
    serve.add_argument("--key", type=Path, help="TLS private key PEM (SEALGATE_KEY)")
    serve.add_argument("--audit-log", type=Path, help="audit log file (SEALGATE_AUDIT_LOG)")
    serve.add_argument("--log-level", default="info", help="uvicorn/sealgate log level")

    certs = commands.add_parser("certs", help="write a CA and a serving certificate")
    certs.add_argument("--out", type=Path, default=Path("certs"), help="output directory")
    certs.add_argument("--service", default="sealgate", help="Kubernetes service name")
    certs.add_argument("--namespace", default="sealgate", help="Kubernetes namespace")
    certs.add_argument("--days", type=int, default=365, help="validity in days")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "certs":
            return _certs(args)
    except SealgateError as exc:
        print(f"sealgate: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse enforces a command


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from webhook.app import create_app
    from webhook.policy import load_policy_dir
    from webhook.settings import Settings

    settings = Settings.from_env(
        host=args.host, port=args.port, policies=args.policies, cert=args.cert, key=args.key,
        audit_log=args.audit_log,
    )
    if settings.cert is None or settings.key is None:
        print("sealgate: serve needs --cert and --key (or SEALGATE_CERT/SEALGATE_KEY); "
              "`sealgate certs` makes a pair for local use", file=sys.stderr)
        return 2
    for path in (settings.cert, settings.key):
        if not path.is_file():
            print(f"sealgate: {path}: no such file", file=sys.stderr)
            return 2
    # Load once before binding: a missing or broken policy directory is a start-up error.
    policies = load_policy_dir(settings.policies, generation=1)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request
    logging.getLogger("sealgate").info(
        "loaded %d policies from %s", len(policies.policies), settings.policies
    )
    uvicorn.run(
        create_app(settings, policies=policies),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert),
        ssl_keyfile=str(settings.key),
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )
    return 0


def _certs(args: argparse.Namespace) -> int:
    from webhook.certs import generate_certificates, kubectl_hints

    paths = generate_certificates(
        args.out, service=args.service, namespace=args.namespace, days=args.days
    )
    print(f"wrote {paths.ca_cert}, {paths.cert}, {paths.key}")
    print(kubectl_hints(paths, service=args.service, namespace=args.namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
