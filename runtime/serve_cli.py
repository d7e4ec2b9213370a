"""psp-serve: run the real Triton server (pspnet-deploy[serve]) on a model repository in the foreground."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from pspcore.cli import Command
from pspcore.errors import PSPError
from pspcore.triton_protocol import DEFAULT_PORTS


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repository", type=click.Path(file_okay=False, path_type=Path))
@click.option("--http-port", type=click.IntRange(1, 65535), default=DEFAULT_PORTS["http"], show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=DEFAULT_PORTS["grpc"], show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on this port (default: metrics off).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the server to the network.")
@click.option("--startup-timeout", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds to wait until every model is ready.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the server's log in this file.")
def main(repository, http_port, grpc_port, metrics_port, address, startup_timeout, log_path):
    """Serve REPOSITORY (written by psp-export triton) with the Triton server of the nvidia-pytriton wheel,
    until Ctrl-C or SIGTERM; exits with the server's exit code.

    \b
    Example:
      psp-export triton model.onnx -o repo --ensemble --platform python
      psp-serve repo
      psp-infer grpc://127.0.0.1:8001/pspnet video.mp4 -o out.mp4
    """
    from runtime.serve import TritonServer

    server = TritonServer(repository, http_port, grpc_port, metrics_port, address, startup_timeout,
                          log_path=log_path)
    server.start()
    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)
        server.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    try:
        try:
            server.wait_ready()
        except PSPError:
            if not stopping:  # interrupted while starting: nothing to report but the stop
                raise
        else:
            metrics = f" metrics {address}:{metrics_port}" if metrics_port else ""
            click.echo(f"ready: http://{server.http_url} grpc {server.grpc_url}{metrics} "
                       f"models: {', '.join(server.models())}")
        code = server.wait()
    finally:
        server.stop()
    click.echo(f"stopped (tritonserver exit code {code})", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
