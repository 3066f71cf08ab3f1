"""``sealgate`` command line (SPEC §6): thin; the work is in the modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    serve.add_argument("--policy-source", choices=("files", "crd", "both"),
                       help="policies from files, ImagePolicy objects, or both "
                            "(SEALGATE_POLICY_SOURCE, default files)")
    serve.add_argument("--kubeconfig", type=Path,
                       help="kubeconfig for --policy-source crd|both (default: in-cluster "
                            "config, else $KUBECONFIG)")
    serve.add_argument("--pod-pull-secrets", action="store_true", default=None,
                       help="registry credentials from pods' imagePullSecrets and their "
                            "ServiceAccount's (SEALGATE_POD_PULL_SECRETS)")
    serve.add_argument("--log-level", default="info", help="uvicorn/sealgate log level")
    serve.add_argument("--workers", type=int,
                       help="processes serving the port (SEALGATE_WORKERS, default 1)")

    certs = commands.add_parser("certs", help="write a CA and a serving certificate")
    certs.add_argument("--out", type=Path, default=Path("certs"), help="output directory")
    certs.add_argument("--service", default="sealgate", help="Kubernetes service name")
    certs.add_argument("--namespace", default="sealgate", help="Kubernetes namespace")
    certs.add_argument("--days", type=int, default=365, help="validity in days")

    check = commands.add_parser(
        "check", help="decide Kubernetes manifests as /validate would",
        description="Decide every pod-bearing object of the manifests as the webhook would. "
                    "Exit 0: all allowed (allow or warn); 1: something would be denied; "
                    "2: usage or load error.",
    )
    check.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                       help="manifest file, directory or - for stdin (repeatable)")
    check.add_argument("-n", "--namespace",
                       help="namespace for objects without metadata.namespace (default: default)")
    check.add_argument("--policies", type=Path, help="policy directory (SEALGATE_POLICIES)")
    check.add_argument("--output", "-o", choices=("table", "json"), default="table")
    check.add_argument("--offline", action="store_true",
                       help="no registry: signatures, scans and tag digests are not checked "
                            "(they count as errors and follow onError)")

    policy = commands.add_parser("policy", help="lint, test or describe policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    lint = policy_commands.add_parser("lint", help="validate policies (exit 1 on errors)")
    lint.add_argument("directory", type=Path)
    test = policy_commands.add_parser("test", help="run *.test.yaml policy tests")
    test.add_argument("directory", type=Path)
    test.add_argument("--policies", type=Path,
                      help="policy directory, if not the one holding the tests")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    schema = policy_commands.add_parser("schema", help="print the JSON Schema of ImagePolicy")
    schema.add_argument("--test", action="store_true",
                        help="the schema of policy test files (ImagePolicyTest) instead")
    policy_commands.add_parser(
        "crd", help="print the ImagePolicy CustomResourceDefinition (generated from the schema)")

    audit = commands.add_parser("audit", help="read the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    report = audit_commands.add_parser(
        "report", help="what enforcement would have denied, per namespace/image/reason")
    report.add_argument("log", help="audit log file (- for stdin)")
    report.add_argument("--since", help="only records this recent (Go duration: 24h, 90m)")
    report.add_argument("--namespace", help="only this namespace (a glob works too)")
    report.add_argument("--output", "-o", choices=("table", "json"), default="table")

    verify = audit_commands.add_parser(
        "verify", help="check the hash chains of audit logs (exit 1 naming the first bad line)",
        description="Follow every chain (workers, replicas, restarts) through the files, "
                    "oldest first; print each chain's id, first and last seq and line count. "
                    "Exit 0 when all are intact, 1 naming file:line of the first edited, "
                    "missing, reordered or duplicated line of each broken chain, 2 when a "
                    "file cannot be read.")
    verify.add_argument("logs", nargs="+", type=Path, metavar="LOG",
                        help="audit log files, oldest first (rotated files before the current)")
    verify.add_argument("--key", type=Path,
                        help="the SEALGATE_AUDIT_KEY file the chains were written with")

    replay = commands.add_parser(
        "replay", help="re-decide recorded admissions under other policies",
        description="Re-decide each admission of an audit log under the policies of DIR, "
                    "from the facts the log recorded (no network). Prints the admissions whose "
                    "decision changes and those the log cannot decide. Exit 0.",
    )
    replay.add_argument("log", help="audit log file (- for stdin)")
    replay.add_argument("--policies", type=Path, required=True, help="the policy set to try")
    replay.add_argument("--output", "-o", choices=("table", "json"), default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "certs":
            return _certs(args)
        if args.command == "check":
            return _check(args)
        if args.command == "policy":
            return _policy(args)
        if args.command == "audit":
            if args.audit_command == "verify":
                return _audit_verify(args)
            return _audit_report(args)
        if args.command == "replay":
            return _replay(args)
    except SealgateError as exc:
        print(f"sealgate: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse enforces a command


def _serve(args: argparse.Namespace) -> int:
    from webhook.serving import serve
    from webhook.settings import Settings

    settings = Settings.from_env(
        host=args.host, port=args.port, policies=args.policies, cert=args.cert, key=args.key,
        audit_log=args.audit_log, policy_source=args.policy_source, kubeconfig=args.kubeconfig,
        pod_pull_secrets=args.pod_pull_secrets, workers=args.workers,
    )
    if settings.cert is None or settings.key is None:
        print("sealgate: serve needs --cert and --key (or SEALGATE_CERT/SEALGATE_KEY); "
              "`sealgate certs` makes a pair for local use", file=sys.stderr)
        return 2
    for path in (settings.cert, settings.key):
        if not path.is_file():
            print(f"sealgate: {path}: no such file", file=sys.stderr)
            return 2
    if settings.cache_url is not None and settings.cache_key is not None:
        from webhook.sharedcache import load_cache_key

        load_cache_key(settings.cache_key)  # an unreadable or short key is a start-up error
    return serve(settings, log_level=args.log_level)


def _certs(args: argparse.Namespace) -> int:
    from webhook.certs import generate_certificates, kubectl_hints

    paths = generate_certificates(
        args.out, service=args.service, namespace=args.namespace, days=args.days
    )
    print(f"wrote {paths.ca_cert}, {paths.cert}, {paths.key}")
    print(kubectl_hints(paths, service=args.service, namespace=args.namespace))
    return 0


def _check(args: argparse.Namespace) -> int:
    import functools

    import anyio

    from webhook.check import check_json, check_objects, exit_code, render_check_table
    from webhook.manifests import load_manifests
    from webhook.reload import load_policies
    from webhook.settings import Settings

    settings = Settings.from_env(policies=args.policies)
    policies = load_policies(settings.policies, generation=1)  # as `serve` loads them
    objects = []
    for name in args.filename:
        for display, text in _read_manifests(name):
            objects.extend(load_manifests(text, display))
    run = functools.partial(
        check_objects, objects, policies=policies, settings=settings,
        default_namespace=args.namespace, offline=args.offline,
    )
    results = anyio.run(run)
    if args.output == "json":
        print(check_json(results, offline=args.offline))
    else:
        print(render_check_table(results, total_objects=len(objects), offline=args.offline))
    return exit_code(results)


def _read_manifests(name: str) -> list[tuple[str, str]]:
    """(display name, text) of ``-`` (stdin), a file, or a directory's manifest files."""
    from webhook.manifests import ManifestError

    if name == "-":
        return [("<stdin>", sys.stdin.read())]
    path = Path(name)
    paths = (sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")
                    and p.is_file())
             if path.is_dir() else [path])
    out = []
    for item in paths:
        try:
            out.append((str(item), item.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{item}: cannot read manifest: {exc}") from exc
    return out


def _policy(args: argparse.Namespace) -> int:
    if args.policy_command == "lint":
        from webhook.lint import lint_directory

        result = lint_directory(args.directory)
        print(result.render())
        return 1 if result.errors else 0
    if args.policy_command == "schema":
        from webhook.schema import schema_text

        sys.stdout.write(schema_text("ImagePolicyTest" if args.test else "ImagePolicy"))
        return 0
    if args.policy_command == "crd":
        from webhook.kube.crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return 0
    from webhook.policy import load_policy_dir
    from webhook.policytest import find_test_files, run_directory

    policies = load_policy_dir(args.policies or args.directory, generation=1)
    if not find_test_files(args.directory):
        print(f"sealgate: no *.test.yaml policy tests under {args.directory}", file=sys.stderr)
        return 1
    run = run_directory(args.directory, policies)
    print(run.render(verbose=args.verbose))
    return 1 if run.failed else 0


def _read_log(name: str) -> list[Any]:
    from webhook.auditlog import read_audit_log

    lines, skipped = read_audit_log(name)
    for item in skipped:
        print(f"sealgate: {name}:{item.line}: skipped: {item.reason}", file=sys.stderr)
    return lines


def _audit_report(args: argparse.Namespace) -> int:
    from webhook.durations import parse_duration
    from webhook.report import build_report

    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        print(f"sealgate: --since: {exc}", file=sys.stderr)
        return 2
    report = build_report(_read_log(args.log), since=since, namespace=args.namespace)
    print(report.to_json() if args.output == "json" else report.render())
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from webhook.auditchain import read_key, read_log_lines, render, verify_lines

    key = read_key(args.key) if args.key is not None else None
    try:
        result = verify_lines(read_log_lines(args.logs), key)
    except OSError as exc:
        print(f"sealgate: cannot read audit log: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    return 0 if result.intact else 1


def _replay(args: argparse.Namespace) -> int:
    from webhook.policy import load_policy_dir
    from webhook.replay import replay

    policies = load_policy_dir(args.policies, generation=1)
    report = replay(_read_log(args.log), policies)
    print(report.to_json() if args.output == "json" else report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
