"""Edit a portrait with the official fal client, pointed at a portrait-queue service.

    pip install fal-client
    python examples/edit_portrait.py portrait.jpg edited.jpg --smile 0.8 --base http://127.0.0.1:8000

The key is one the service accepts (`python -m api.keys create NAME`; anything with AUTH_MODE=off).
"""

from __future__ import annotations

import argparse
import os
import urllib.request
from collections.abc import Callable

import fal_client
import fal_client.client as fc


def point_at(base: str) -> None:
    # fal-client has no setting for its hosts (and its env vars force https), so its URL globals
    # are patched once, before the first call.
    base = base.rstrip("/")
    fc.QUEUE_URL_FORMAT = base + "/"  # submit, status, result, cancel
    fc.RUN_URL_FORMAT = base + "/run/"  # run()
    fc.REST_URL = base  # storage: /storage/auth/token, /storage/upload/initiate
    fc.CDN_URL = base  # storage: /files/upload


def _log_printer() -> Callable[[fal_client.Status], None]:
    printed = 0

    def show(update: fal_client.Status) -> None:
        # Every poll answers with all log lines so far: print only the new ones.
        nonlocal printed
        logs = getattr(update, "logs", None) or []
        for line in logs[printed:]:
            print(line["message"])
        printed = max(printed, len(logs))

    return show


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", help="a local portrait (JPEG, PNG, WebP or HEIC)")
    parser.add_argument("output", help="where to write the edited image")
    parser.add_argument("--base", default=os.environ.get("PORTRAIT_QUEUE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("FAL_KEY", "anything:anything"))
    parser.add_argument("--smile", type=float, default=0.8)
    parser.add_argument("--yaw", type=float, default=0.0, help="head yaw in degrees")
    args = parser.parse_args()

    point_at(args.base)
    client = fal_client.SyncClient(key=args.key)
    image_url = client.upload_file(args.image)  # stored in the service's bucket
    result = client.subscribe(
        "fal-ai/live-portrait/image",
        arguments={"image_url": image_url, "smile": args.smile, "rotate_yaw": args.yaw},
        with_logs=True,
        on_queue_update=_log_printer(),
    )
    image = result["image"]
    urllib.request.urlretrieve(image["url"], args.output)
    print(f"{args.output}: {image['width']}x{image['height']} {image['content_type']}")


if __name__ == "__main__":
    main()
