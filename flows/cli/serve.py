"""`serve`: the champion model over HTTP (POST /v1/moderate, a page at /, /ready, /metrics)."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from flows.cli.app import app, console, err, fail, project_params, setup


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@app.command()
def serve(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="models:/<name>@<alias> (followed: a moved alias loads the new version), "
        "models:/<name>/<version>, or a release folder. Default: models:/<track.model_name>@champion.")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0 to expose it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 8000,
    max_batch_items: Annotated[int, typer.Option(
        "--max-batch-items", min=1, max=4096, help="Most texts per request.")] = 64,
    max_scored_items: Annotated[int, typer.Option(
        "--max-scored-items", min=1, max=16384, help="Most texts scored together: requests that arrive together "
        "share a batch up to this many (at least --max-batch-items).")] = 256,
    max_text_chars: Annotated[int, typer.Option(
        "--max-text-chars", min=1, max=1_000_000, help="Longest text accepted (characters).")] = 10_000,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", min=0, max=1000, help="How long a batch waits for more requests.")] = 5.0,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="onnxruntime threads (default: this machine's cores).")] = None,
    poll_s: Annotated[float, typer.Option(
        "--poll-s", min=0.1, help="Seconds between registry checks for a moved alias.")] = 30.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Serve the model over HTTP: POST /v1/moderate, a page at /, /health, /ready, /metrics, /docs.

    A followed alias is checked every --poll-s s; a new version loads in the background, then swaps in.
    """
    from components.serving.loader import ModelHolder, ModelRef, ModelRefError

    def parsed(spec: str) -> ModelRef:
        try:
            return ModelRef.parse(spec)
        except ModelRefError as exc:
            raise fail(f"--model {exc}", code=2) from None

    ref = parsed(model) if model else None  # a bad --model fails before anything else is set up
    root = setup(verbose)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the server's log
    import uvicorn

    from components.serving.service import ServiceSettings, create_app
    from components.tracking.store import redact_uri
    from flows.settings import tracking_uri

    ref = ref or parsed(f"models:/{project_params(root).track.model_name}@champion")
    uri = None if ref.folder is not None else tracking_uri()
    holder = ModelHolder(ref, uri, root / "models" / ".serving-cache", threads=threads or _cores())
    where = f"from {redact_uri(uri)}" if uri else "(a folder: no registry)"
    console.print(f"loading {ref} {where} …", highlight=False)
    holder.check()  # the first answer now, so what is served (or why nothing is) shows before the port opens
    if holder.current is not None:
        m = holder.current.info()
        console.print(f"serving {m['name']}" + (f" version {m['version']}" if m["version"] else "")
                      + f" ({m['variant']})", highlight=False)
    elif ref.folder is not None:  # a folder does not change by waiting (the holder has logged why)
        raise typer.Exit(1)
    else:
        # the holder has logged why (no champion yet, the registry unreachable, a version that does not load)
        err.print(f"starting anyway: /ready and /v1/moderate answer 503 until a model loads (the registry is checked "
                  f"every {poll_s:g} s)", highlight=False)
    settings = ServiceSettings(max_batch_items=max_batch_items, max_scored_items=max(max_scored_items, max_batch_items),
                               max_text_chars=max_text_chars,
                               batch_wait_ms=batch_wait_ms, poll_s=poll_s)
    console.print(f"content moderation on http://{host}:{port}  (page: /, API: POST /v1/moderate, docs: /docs, "
                  "probes: /health /ready, metrics: /metrics)", highlight=False)
    uvicorn.run(create_app(holder, settings), host=host, port=port, log_level="warning")
