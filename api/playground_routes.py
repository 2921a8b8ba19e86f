"""The browser playground: static files of api/playground/ and the schema they render from.

The page builds its sliders and fields from `EditParams`' JSON schema, served here, so its
ranges are always the API's; it then talks to the public API (upload, submit, SSE status,
result) exactly like any client, with the key the user typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse

from api.app_ids import AppId
from core.config import Settings
from core.edit_params import EXPRESSION_FIELDS, EditParams

STATIC_DIR = Path(__file__).parent / "playground"
# Served by name from this list only: no path from the URL ever reaches the filesystem.
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


def page_config(settings: Settings) -> dict[str, Any]:
    app = AppId.parse(settings.app_id_list[0])
    return {
        "app_id": app.full,
        "queue_base": app.queue_base,
        "expression_fields": list(EXPRESSION_FIELDS),
        "schema": EditParams.model_json_schema(),
        # [05]'s AUTH_MODE when present; otherwise static API_KEYS decide.
        "auth_required": getattr(settings, "auth_mode", "off") == "keys" or bool(settings.api_key_set),
    }


def playground_router(settings: Settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    config = page_config(settings)

    @router.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @router.get("/playground/config.json")
    def playground_config() -> JSONResponse:
        return JSONResponse(config)

    @router.get("/playground/{name}")
    def static_file(name: str) -> FileResponse:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise HTTPException(status_code=404, detail="Not Found")
        return FileResponse(STATIC_DIR / name, media_type=media_type)

    return router
