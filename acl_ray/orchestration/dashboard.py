"""``acl-ray dashboard DIR``: optuna-dashboard on a sweep's Optuna study, on this machine's loopback.

optuna-dashboard (the ``tracking`` extra) is served by the standard library's threaded WSGI server on
127.0.0.1 only, without its per-request log lines: from another machine it is reached through an SSH
tunnel (``ray attach cluster.yaml -p PORT`` on a cluster made with ``ray up``), as Ray's own dashboard
is. No Ray is started or imported.
"""

from __future__ import annotations

import signal
import socketserver
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from acl_ray.config.sweep import SWEEP_FILE, load_sweep
from acl_ray.console import console
from acl_ray.orchestration.study import open_storage, stored_study, study_name
from acl_ray.orchestration.tracking import require

HOST = "127.0.0.1"  # never all interfaces: the dashboard can change a study (notes, tells, deletes)


def sweep_study(folder: str | Path) -> tuple[str, str]:
    """(storage URL, study name) of the sweep in ``folder``, or a one-line ``ValueError``."""
    out = Path(folder).resolve()
    if not (out / SWEEP_FILE).is_file():
        raise ValueError(f"{str(out)!r} is not a sweep folder (no {SWEEP_FILE})")
    s = load_sweep(out / SWEEP_FILE)
    url = s.study_url(out)
    if url is None:
        raise ValueError(
            f"{str(out)!r} is a sweep.scheduler={s.sweep.scheduler} sweep: a population has no searcher, so"
            f" no Optuna study; watch it with tensorboard --logdir {out} or sweep.tracking (README)"
        )
    if not stored_study(url, study_name(out)):
        raise ValueError(
            f"{url} holds no study {study_name(out)!r} yet: the sweep has not started, or it ran before"
            " acl-ray kept its study"
        )
    return url, study_name(out)


class _Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open request does not keep Ctrl-C from ending the server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request on the user's terminal


def dashboard_server(url: str, port: int) -> WSGIServer:
    """optuna-dashboard's WSGI app on ``127.0.0.1:port`` (0: a free port), not yet serving."""
    require("dashboard", "acl-ray dashboard")
    import optuna_dashboard

    app = optuna_dashboard.wsgi(open_storage(url))
    try:
        return make_server(HOST, port, app, server_class=_Threaded, handler_class=_Quiet)
    except OSError as e:
        raise ValueError(f"cannot listen on {HOST}:{port} ({e.strerror}): pass another --port") from None


def serve(url: str, name: str, port: int) -> None:
    """Serve the study until Ctrl-C, after printing where to open it, from here and from afar."""
    server = dashboard_server(url, port)
    port = server.server_address[1]
    study_id = open_storage(url).get_study_id_from_name(name)
    for line in (
        f"optuna-dashboard: http://{HOST}:{port}/dashboard/studies/{study_id}  (study {name!r} in {url};"
        " Ctrl-C stops it)",
        f"on a cluster head, forward the port from your machine: ray attach cluster.yaml -p {port}"
        f"  (or ssh -L {port}:{HOST}:{port} USER@HEAD), then open that address there",
    ):
        console.print(line, markup=False, soft_wrap=True, highlight=False)
    # Ctrl-C stops it even where SIGINT came ignored (a job started with `&` by a script, a test
    # runner's worker): Python only installs its own handler when the signal is not ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
