"""``airflow-sm-pytorch``: review requests (``plan``) and run the local runtime (``local serve``).

Each sub-command imports what it needs when it runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_sm_pytorch.local.config import DEFAULT_HOST, DEFAULT_PORT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-sm-pytorch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="print exactly what would be sent and uploaded; sends nothing")
    plan_kinds = plan.add_subparsers(dest="kind", required=True)
    train = plan_kinds.add_parser("train", help="a CreateTrainingJob request from PyTorch estimator kwargs")
    train.add_argument("--spec", required=True, help="JSON or YAML file: estimator kwargs, inputs, job_name, "
                       "region, default_bucket, default_bucket_prefix")
    deploy = plan_kinds.add_parser("deploy", help="CreateModel, CreateEndpointConfig and CreateEndpoint requests "
                                   "from PyTorchModel (or estimator + training job) and deploy kwargs")
    deploy.add_argument("--spec", required=True, help="JSON or YAML file: model (PyTorchModel kwargs) or "
                        "estimator + training_job_name, deploy (deploy kwargs), name, region, default_bucket, "
                        "default_bucket_prefix, local")

    recipe = plan_kinds.add_parser("recipe", help="the CreateTrainingJob request of a HyperPod recipe job "
                                   "(PyTorch(training_recipe=..., recipe_overrides=...))")
    recipe.add_argument("--spec", required=True, help="JSON or YAML file: training_recipe, recipe_overrides, "
                        "estimator kwargs, inputs, job_name, region, default_bucket, recipes_dir, adapter_dir, "
                        "neuron_dir")
    recipe.add_argument("--show-recipe", action="store_true", help="also print the resolved recipe (secrets "
                        "masked), each overridden key marked")

    local = commands.add_parser("local", help="the local SageMaker-compatible runtime")
    local_cmds = local.add_subparsers(dest="local_command", required=True)
    serve = local_cmds.add_parser("serve", help="serve the SageMaker and CloudWatch Logs APIs on this machine")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"bind address (default: {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--root", default=None, help="data directory (default: the per-user data directory)")
    serve.add_argument("--access-key-id", default=None,
                       help="the key requests must be signed with (default: $SM_PYTORCH_LOCAL_ACCESS_KEY_ID, "
                            "else the pair in ROOT/credentials, generated once)")
    serve.add_argument("--secret-access-key", default=None,
                       help="its secret (default: $SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY, else ROOT/credentials); "
                            "prefer the environment variable: arguments are visible to other local users")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="also serve requests whose Host header names NAME (repeatable; loopback always)")
    serve.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                       help="let jobs write file:// outputs and checkpoints under DIR too (repeatable; the root "
                            "always)")
    serve.add_argument("--spot-interruptions", default=None, metavar="AFTER[xTIMES]",
                       help="rehearse spot interruptions: every managed spot job is interrupted AFTER seconds "
                            "into Training, TIMES times (default: $SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS; a job's "
                            "tag airflow-sm-pytorch:spot-interruptions overrides it)")
    for name, text in (("status", "say whether a runtime serves ROOT, where, and what runs there"),
                       ("stop", "stop the runtime serving ROOT (SIGTERM; its jobs and endpoints keep running "
                                "in their own processes and are picked up by the next runtime)")):
        sub = local_cmds.add_parser(name, help=text)
        sub.add_argument("--root", default=None, help="data directory (default: the per-user data directory)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plan":
        from airflow_sm_pytorch.planning import plan_main

        return plan_main(args)
    if args.local_command in ("status", "stop"):
        from airflow_sm_pytorch.local.server import status_main, stop_main

        return (status_main if args.local_command == "status" else stop_main)(args)
    from airflow_sm_pytorch.local.server import serve_main

    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
