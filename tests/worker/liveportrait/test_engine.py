"""The whole edit through `Engine.edit`, field by field, with the narrow architecture's weights."""

from __future__ import annotations

import io
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from core.edit_params import EditParams
from core.input_errors import FaceIndexError, InvalidImageError, NoFaceError
from tests.data import photo
from worker.liveportrait.engine import Engine


def encode(rgb: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.fixture(scope="module")
def engine(tiny_weights_dir: Path) -> Engine:
    return Engine.load(tiny_weights_dir, arch="tiny", device="cpu")


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (300, 420, 3), dtype=np.uint8)


def test_default_edit_pastes_back_at_input_size(engine: Engine, astronaut: np.ndarray) -> None:
    # a wider canvas, so that the output size cannot be the crop size by accident
    canvas = np.zeros((560, 700, 3), dtype=np.uint8)
    canvas[24:536, 90:602] = astronaut
    result = engine.edit(encode(canvas), EditParams(smile=1.0))
    img = decode(result.data)
    assert (result.width, result.height) == (700, 560) == img.size
    assert result.content_type == "image/jpeg" and img.format == "JPEG"
    assert result.timings["total"] > 0
    assert {"detect", "appearance", "warping", "decoder"} <= set(result.timings)


def test_pasteback_keeps_the_rest_of_the_image(engine: Engine, astronaut: np.ndarray) -> None:
    result = engine.edit(encode(astronaut), EditParams(output_format="png", blink=-10))
    out = np.asarray(decode(result.data))
    assert result.content_type == "image/png"
    # the crop (scale 2.3 around a ~90 px face) leaves the bottom-right corner untouched
    np.testing.assert_array_equal(out[-40:, -40:], astronaut[-40:, -40:])
    assert np.abs(out.astype(int) - astronaut.astype(int)).max() > 0  # the face region changed


@pytest.mark.parametrize("dsize", [512, 256])
def test_crop_alone_without_pasteback(engine: Engine, astronaut: np.ndarray, dsize: int) -> None:
    params = EditParams(flag_pasteback=False, dsize=dsize, output_format="png")
    result = engine.edit(encode(astronaut), params)
    assert (result.width, result.height) == (dsize, dsize) == decode(result.data).size


def test_whole_image_without_crop(engine: Engine, noise: np.ndarray) -> None:
    # As the official image path: the decoded 512x512 image, whatever flag_pasteback and dsize say.
    params = EditParams(flag_do_crop=False, flag_lip_zero=False, output_format="png")
    for update in ({}, {"flag_pasteback": False}, {"dsize": 256}):
        result = engine.edit(encode(noise), params.model_copy(update=update))
        assert (result.width, result.height) == (512, 512), update


def test_no_face_with_cropping_is_refused(engine: Engine, noise: np.ndarray) -> None:
    with pytest.raises(NoFaceError, match="no face found to crop"):
        engine.edit(encode(noise), EditParams())


def test_safety_checker_refuses_images_without_a_face(engine: Engine, noise: np.ndarray) -> None:
    with pytest.raises(NoFaceError, match="safety checker"):
        engine.edit(encode(noise), EditParams(flag_do_crop=False, enable_safety_checker=True))


def test_safety_checker_passes_a_portrait(engine: Engine, astronaut: np.ndarray) -> None:
    result = engine.edit(encode(astronaut), EditParams(enable_safety_checker=True, flag_do_crop=False))
    assert (result.width, result.height) == (512, 512)


def test_exif_orientation_is_applied(engine: Engine, astronaut: np.ndarray) -> None:
    # stored sideways with orientation 6 ("rotate 90 CW to display"): displayed upright
    sideways = np.ascontiguousarray(np.rot90(astronaut[:, :400], k=1))  # 400 wide, 512 tall -> 512x400
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(sideways, "JPEG", exif=exif.tobytes(), quality=95)
    result = engine.edit(data, EditParams())  # finds the face only if the image was turned upright
    assert (result.width, result.height) == (400, 512)


def test_bad_bytes_are_an_input_error(engine: Engine) -> None:
    with pytest.raises(InvalidImageError):
        engine.edit(b"definitely not an image", EditParams())


def test_lip_zero_adds_the_lip_delta_only_for_open_lips(engine: Engine, astronaut: np.ndarray) -> None:
    from worker.liveportrait.stage_timer import StageTimer

    prep = engine.prepare(astronaut, EditParams(), StageTimer(None, None))
    on, off = EditParams(flag_lip_zero=True), EditParams(flag_lip_zero=False)
    prep.lip_ratio = 0.2  # open: the lip MLP closes it

    def x_d(params: EditParams) -> np.ndarray:
        return engine.driving_keypoints(prep, params).numpy()

    assert not np.allclose(x_d(on), x_d(off))
    prep.lip_ratio = 0.01  # already closed (below the 0.03 threshold): nothing to do
    np.testing.assert_array_equal(x_d(on), x_d(off))


def test_every_control_changes_the_driving_keypoints(engine: Engine, astronaut: np.ndarray) -> None:
    from core.edit_params import EXPRESSION_FIELDS
    from worker.liveportrait.stage_timer import StageTimer

    prep = engine.prepare(astronaut, EditParams(), StageTimer(None, None))
    base = engine.driving_keypoints(prep, EditParams()).numpy()
    for name in EXPRESSION_FIELDS:
        moved = engine.driving_keypoints(prep, EditParams(**{name: 5.0 if name != "smile" else 1.0})).numpy()
        assert not np.allclose(moved, base), name


def test_log_and_check_callbacks(engine: Engine, astronaut: np.ndarray) -> None:
    lines: list[str] = []
    engine.edit(encode(astronaut), EditParams(), log=lines.append)
    assert any(line.startswith("warping:") for line in lines)
    assert any("face" in line for line in lines)

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise Stop

    with pytest.raises(Stop):
        engine.edit(encode(astronaut), EditParams(), check=check)


def test_repeated_edits_of_one_portrait_reuse_the_preparation(
    tiny_weights_dir: Path, astronaut: np.ndarray
) -> None:
    cached = Engine.load(tiny_weights_dir, arch="tiny", device="cpu", cache_size=2)
    data = encode(astronaut)
    first = cached.edit(data, EditParams(smile=1.0, output_format="png"))
    second = cached.edit(data, EditParams(smile=1.0, output_format="png"), log=(lines := []).append)
    assert (cached.cache.misses, cached.cache.hits) == (1, 1)
    assert "detect" in first.timings and "detect" not in second.timings
    assert any("cache hit" in line for line in lines)
    assert first.data == second.data  # same result, less work
    # a crop setting is part of the key: a new preparation
    cached.edit(data, EditParams(scale=2.0))
    assert cached.cache.misses == 2
    # the expression is not: another slider value reuses it
    cached.edit(data, EditParams(smile=0.2))
    assert cached.cache.hits == 2


def test_batch_matches_single_edits_and_isolates_failures(engine: Engine, astronaut: np.ndarray) -> None:
    from worker.liveportrait.engine import BatchItem

    data = encode(astronaut)
    params = [
        EditParams(smile=1.0, output_format="png"),
        EditParams(wink=10, flag_pasteback=False, output_format="png"),
    ]
    items = [BatchItem(data, params[0]), BatchItem(b"junk", EditParams()), BatchItem(data, params[1])]
    outcomes = engine.edit_batch(items)
    assert isinstance(outcomes[1], InvalidImageError)
    for outcome, p in zip((outcomes[0], outcomes[2]), params, strict=True):
        assert not isinstance(outcome, Exception)
        assert outcome.timings["batch_size"] == 2
        single = engine.edit(data, p)
        got, expected = np.asarray(decode(outcome.data), int), np.asarray(decode(single.data), int)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1


def test_a_cancelled_item_does_not_sink_the_batch(engine: Engine, astronaut: np.ndarray) -> None:
    from worker.liveportrait.engine import BatchItem

    class Cancelled(Exception):
        pass

    calls = {"n": 0}

    def cancel_at_render() -> None:
        calls["n"] += 1
        if calls["n"] > 6:  # after the six preparation stages: cancelled at the shared pass
            raise Cancelled

    data = encode(astronaut)
    outcomes = engine.edit_batch(
        [BatchItem(data, EditParams(), check=cancel_at_render), BatchItem(data, EditParams())]
    )
    assert isinstance(outcomes[0], Cancelled)
    assert not isinstance(outcomes[1], Exception) and outcomes[1].width == 512


def _changed_centre(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(x, y) centroid of the pixels an edit changed by more than a few grey levels."""
    changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 8
    ys, xs = np.nonzero(changed)
    assert len(xs) > 100, "the edit changed nothing"
    return np.array([xs.mean(), ys.mean()])


def test_a_sideways_photo_is_edited_where_its_face_is(engine: Engine, astronaut: np.ndarray) -> None:
    # No EXIF to help: the face is found on the image turned back, and paste-back lands on the
    # photo as it was sent (its own orientation and size).
    upright = engine.edit(encode(astronaut), EditParams(smile=1.0, output_format="png"))
    centre = _changed_centre(astronaut, np.asarray(decode(upright.data)))
    sideways = np.ascontiguousarray(np.rot90(astronaut))  # a quarter turn counter-clockwise
    lines: list[str] = []
    result = engine.edit(encode(sideways), EditParams(smile=1.0, output_format="png"), log=lines.append)
    out = np.asarray(decode(result.data))
    assert out.shape == sideways.shape
    assert any("turned" in line for line in lines)
    # np.rot90 sends (x, y) to (y, W - 1 - x).
    expected = np.array([centre[1], 511 - centre[0]])
    assert np.linalg.norm(_changed_centre(sideways, out) - expected) < 12


@pytest.fixture(scope="module")
def two_faces(astronaut: np.ndarray) -> np.ndarray:
    canvas = np.full((512, 920, 3), 128, np.uint8)
    canvas[:, :512] = astronaut
    canvas[64:448, 530:914] = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)
    return canvas


def test_face_index_picks_a_face_by_size(engine: Engine, two_faces: np.ndarray) -> None:
    lines: list[str] = []
    params = EditParams(smile=1.0, output_format="png")
    largest = engine.edit(encode(two_faces), params, log=lines.append)
    assert any("found 2 face(s)" in line and "editing the largest" in line for line in lines)
    assert _changed_centre(two_faces, np.asarray(decode(largest.data)))[0] < 512
    second = engine.edit(encode(two_faces), params.model_copy(update={"face_index": 1}))
    assert _changed_centre(two_faces, np.asarray(decode(second.data)))[0] > 530
    with pytest.raises(FaceIndexError, match=r"2 face\(s\)"):
        engine.edit(encode(two_faces), params.model_copy(update={"face_index": 2}))
    assert EditParams().face_index == 0  # fal's behaviour unless asked


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_photos_without_a_person_are_refused(engine: Engine, name: str) -> None:
    with pytest.raises(NoFaceError, match="safety checker"):
        engine.edit(encode(photo(name)), EditParams(enable_safety_checker=True))


def test_a_large_photo_is_cropped_from_the_limited_image(engine: Engine, astronaut: np.ndarray) -> None:
    from worker.liveportrait.crop import crop_transform, network_input, warp_crop
    from worker.liveportrait.face import get_detector
    from worker.liveportrait.stage_timer import StageTimer

    big = cv2.resize(astronaut, (2000, 2000), interpolation=cv2.INTER_CUBIC)
    prep = engine.prepare(big, EditParams(), StageTimer(None, None))
    # The official loader's limit first (bilinear to 1280), then detection and the crop on that.
    limited = cv2.resize(big, (1280, 1280))
    m_o2c, _ = crop_transform(get_detector().detect(limited)[0].landmarks)
    np.testing.assert_array_equal(prep.source, network_input(warp_crop(limited, m_o2c, 512)))
    # Paste-back goes onto the original, at its full resolution.
    result = engine.edit(encode(big, "JPEG", quality=90), EditParams(smile=1.0))
    assert (result.width, result.height) == (2000, 2000)


class _DecoderStarted(torch.nn.Module):
    """The real decoder, noting when the shared pass reaches it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.started = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.started = True
        return self.inner(x)


def test_a_cancellation_during_the_decoder_pass_ends_only_its_item(
    tiny_weights_dir: Path, astronaut: np.ndarray
) -> None:
    from worker.liveportrait.engine import BatchItem

    engine = Engine.load(tiny_weights_dir, arch="tiny", device="cpu")
    decoder = _DecoderStarted(engine.nets.decoder)
    engine.nets.decoder = decoder  # type: ignore[assignment]

    class Cancelled(Exception):
        pass

    def cancelled_once_decoding() -> None:
        if decoder.started:
            raise Cancelled

    data = encode(astronaut)
    items = [
        BatchItem(data, EditParams(smile=1.0)),
        BatchItem(data, EditParams(wink=10), check=cancelled_once_decoding),
        BatchItem(data, EditParams(blink=-10)),
    ]
    outcomes = engine.edit_batch(items)
    assert decoder.started
    assert isinstance(outcomes[1], Cancelled)
    for outcome in (outcomes[0], outcomes[2]):
        assert not isinstance(outcome, Exception) and outcome.width == 512
        assert outcome.timings["batch_size"] == 3


def test_a_batched_items_time_excludes_the_others_preparation(engine: Engine, astronaut: np.ndarray) -> None:
    from worker.liveportrait.engine import BatchItem

    def slow_preparation(line: str) -> None:
        if line.startswith(("detect:", "appearance:")):
            time.sleep(0.6)

    data = encode(astronaut)
    start = time.perf_counter()
    quick, slow = engine.edit_batch(
        [BatchItem(data, EditParams()), BatchItem(data, EditParams(smile=1.0), log=slow_preparation)]
    )
    wall = time.perf_counter() - start
    assert not isinstance(quick, Exception) and not isinstance(slow, Exception)
    assert slow.timings["total"] - quick.timings["total"] > 1.0
    # Shares: the totals add up to the batch's wall time, not twice the shared pass.
    assert quick.timings["total"] + slow.timings["total"] == pytest.approx(wall, rel=0.1)
