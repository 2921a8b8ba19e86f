"""`portrait-queue`: edit a portrait through the service, or inspect and cancel requests.

    portrait-queue edit photo.jpg --smile 1 --blink -10 -o out.jpg
    portrait-queue status ID [--logs]     portrait-queue result ID [-o FILE]
    portrait-queue cancel ID              portrait-queue keys create|list|revoke …

Every command takes --url (PORTRAIT_QUEUE_URL), --key (PORTRAIT_QUEUE_KEY, else FAL_KEY) and
--json (machine-readable stdout; progress and errors stay on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli import key_commands
from cli.client import DEFAULT_APP, ApiClient
from cli.errors import CliError
from cli.params import add_edit_options, edit_values
from cli.progress import Progress

DEFAULT_URL = "http://127.0.0.1:8000"
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png"}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("PORTRAIT_QUEUE_URL", DEFAULT_URL), help="service base URL"
    )
    common.add_argument(
        "--key",
        default=os.environ.get("PORTRAIT_QUEUE_KEY") or os.environ.get("FAL_KEY"),
        help="API key key_id:secret (default: PORTRAIT_QUEUE_KEY, then FAL_KEY)",
    )
    common.add_argument("--app", default=DEFAULT_APP, help="endpoint id")
    common.add_argument("--json", action="store_true", help="print JSON on stdout")

    parser = argparse.ArgumentParser(prog="portrait-queue", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", parents=[common], help="upload, edit, wait, download")
    edit.add_argument("image", help="portrait file, or an http(s) or data URL to use as is")
    edit.add_argument(
        "-o", "--output", type=Path, help="where to save the result (default: <image>.edited.<ext>)"
    )
    edit.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    edit.add_argument("--no-download", action="store_true", help="print the result URL only")
    add_edit_options(edit)

    status = commands.add_parser("status", parents=[common], help="a request's status")
    status.add_argument("request_id")
    status.add_argument("--logs", action="store_true", help="include the log lines")

    result = commands.add_parser("result", parents=[common], help="a request's result")
    result.add_argument("request_id")
    result.add_argument("-o", "--output", type=Path, help="download the image here")

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a request")
    cancel.add_argument("request_id")

    key_commands.add_parser(commands)  # runs on the server: no --url or --key
    return parser


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _default_output(image: str, content_type: str) -> Path:
    name = Path(image).name if not image.startswith(("http://", "https://", "data:")) else "portrait"
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return Path(f"{stem}.edited{_EXTENSIONS.get(content_type, '.bin')}")


def cmd_edit(args: argparse.Namespace, client: ApiClient) -> int:
    values = edit_values(args)  # checked before anything is uploaded
    progress = Progress(enabled=not args.quiet)
    source = args.image
    if source.startswith(("http://", "https://", "data:")):
        image_url = source
    else:
        progress.finish(f"uploading {Path(source).name}")
        image_url = client.upload(Path(source))
    ticket = client.submit({"image_url": image_url, **values})
    request_id = ticket["request_id"]
    progress.finish(f"submitted {request_id}")
    progress.update(ticket)
    try:
        final = None
        for event in client.stream_status(request_id):
            progress.update(event)
            final = event
    except KeyboardInterrupt:
        client.cancel(request_id)
        progress.finish(f"interrupted: cancellation of {request_id} requested")
        return 130
    if final is None or final.get("status") != "COMPLETED":
        raise CliError(
            f"the status stream of {request_id} ended early; try `portrait-queue status {request_id}`"
        )
    output = client.result(request_id)  # raises the request's own failure, summarised
    image = output["image"]
    saved: Path | None = None
    if not args.no_download:
        saved = args.output or _default_output(args.image, image.get("content_type", ""))
        client.download(image["url"], saved)
    seconds = (final.get("metrics") or {}).get("inference_time")
    progress.finish(f"done in {seconds:.2f} s of inference" if isinstance(seconds, float) else "done")
    where = str(saved) if saved else image["url"]
    _emit(args, {"request_id": request_id, "output": str(saved) if saved else None, **output}, where)
    return 0


def cmd_status(args: argparse.Namespace, client: ApiClient) -> int:
    body = client.status(args.request_id, logs=args.logs)
    line = body["status"]
    if body["status"] == "IN_QUEUE":
        line += f" (queue position {body.get('queue_position', 0)})"
    if body.get("error"):
        line += f": failed: {body['error']}"
    lines = [line] + [f"  {entry['timestamp']} {entry['message']}" for entry in body.get("logs") or []]
    _emit(args, body, "\n".join(lines))
    return 0


def cmd_result(args: argparse.Namespace, client: ApiClient) -> int:
    output = client.result(args.request_id)
    image = output["image"]
    if args.output:
        size = client.download(image["url"], args.output)
        _emit(args, {**output, "output": str(args.output)}, f"{args.output} ({size} bytes)")
    else:
        _emit(args, output, image["url"])
    return 0


def cmd_cancel(args: argparse.Namespace, client: ApiClient) -> int:
    outcome = client.cancel(args.request_id)
    text = {
        "CANCELLATION_REQUESTED": f"cancellation of {args.request_id} requested",
        "ALREADY_COMPLETED": f"{args.request_id} had already completed",
    }.get(outcome, outcome)
    _emit(args, {"request_id": args.request_id, "status": outcome}, text)
    return 0


COMMANDS = {"edit": cmd_edit, "status": cmd_status, "result": cmd_result, "cancel": cmd_cancel}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keys":
            return key_commands.run(args)
        client = ApiClient(args.url, args.key, args.app)
        try:
            return COMMANDS[args.command](args, client)
        finally:
            client.close()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
