"""The endpoint's edit controls: the input schema of fal-ai/live-portrait/image minus `image_url`.

Ranges follow the expression editor's declared slider ranges; values outside them are refused
(422 at the API, a one-line error on the command line), never clamped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Order used by the conformance kit's `edit_param_names` and by the expression editor.
EXPRESSION_FIELDS: tuple[str, ...] = (
    "rotate_pitch",
    "rotate_yaw",
    "rotate_roll",
    "blink",
    "eyebrow",
    "wink",
    "pupil_x",
    "pupil_y",
    "aaa",
    "eee",
    "woo",
    "smile",
)


class EditParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blink: float = Field(0.0, ge=-20, le=5, description="Eyes closed (negative) or wide open (positive).")
    eyebrow: float = Field(0.0, ge=-10, le=15, description="Raise or lower the eyebrows.")
    wink: float = Field(0.0, ge=0, le=25, description="Wink.")
    pupil_x: float = Field(0.0, ge=-15, le=15, description="Move the pupils horizontally.")
    pupil_y: float = Field(0.0, ge=-15, le=15, description="Move the pupils vertically.")
    aaa: float = Field(0.0, ge=-30, le=120, description="Open the mouth in an 'aaa' shape.")
    eee: float = Field(0.0, ge=-20, le=15, description="Mouth in an 'eee' shape.")
    woo: float = Field(0.0, ge=-20, le=15, description="Mouth in a 'woo' shape.")
    smile: float = Field(0.0, ge=-0.3, le=1.3, description="Smile.")
    rotate_pitch: float = Field(0.0, ge=-20, le=20, description="Head pitch, degrees.")
    rotate_yaw: float = Field(0.0, ge=-20, le=20, description="Head yaw, degrees.")
    rotate_roll: float = Field(0.0, ge=-20, le=20, description="Head roll, degrees.")
    flag_pasteback: bool = Field(True, description="Paste the edited crop back into the original image.")
    flag_do_crop: bool = Field(True, description="Crop to the face first; false uses the whole image.")
    flag_do_rot: bool = Field(True, description="Rotate the crop upright (only with flag_do_crop).")
    flag_lip_zero: bool = Field(True, description="Close the lips before animating.")
    dsize: int = Field(512, ge=64, le=2048, description="Size of the face crop in pixels.")
    scale: float = Field(2.3, gt=0, le=10, description="Scale of the face crop (larger: more context).")
    vx_ratio: float = Field(0.0, ge=-1, le=1, description="Horizontal offset of the crop.")
    vy_ratio: float = Field(-0.125, ge=-1, le=1, description="Vertical offset of the crop.")
    enable_safety_checker: bool = Field(False, description="Refuse images without a face.")
    output_format: Literal["jpeg", "png"] = Field("jpeg", description="Output encoding.")
    # Not in fal's schema: an extension whose default is fal's behaviour (the largest face), so a
    # fal client never sends it. An index past the faces found is refused after detection (422).
    face_index: int = Field(
        0,
        ge=0,
        le=99,
        description="Extension: which face to edit when there are several, 0 = the largest, then by size.",
    )

    def expression_values(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, name)) for name in EXPRESSION_FIELDS)
