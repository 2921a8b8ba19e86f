"""The image edit, end to end: decode, detect, crop, the four networks, paste back, encode.

`Engine.load` builds and loads the networks once; `Engine.edit` is then called for every request.
The per-portrait half (`prepare`) is separate from the per-edit half (`render`) so that callers
can reuse a prepared portrait for several edits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.edit_params import EditParams
from core.input_errors import FaceIndexError, NoFaceError

from . import keypoints as kp
from .arch import Arch, get_arch
from .crop import crop_transform, limit_input, network_input, warp_crop, whole_image_input
from .face import PASSES, get_detector, lip_open_ratio
from .imageio import decode_image, encode_image
from .pasteback import paste_back, resize_crop
from .portrait_cache import PortraitCache, PreparedPortrait, portrait_key
from .weights import Networks, load_networks

LogFn = Callable[[str], None]
CheckFn = Callable[[], None]


@dataclass
class EditResult:
    data: bytes
    content_type: str
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchItem:
    image: bytes
    params: EditParams
    log: LogFn | None = None
    check: CheckFn | None = None


class _Timer:
    def __init__(self, log: LogFn | None, check: CheckFn | None) -> None:
        self.timings: dict[str, float] = {}
        self.log = log
        self.check = check

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.check is not None:
            self.check()
        start = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - start)

    def record(self, name: str, elapsed: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + elapsed
        if self.log is not None:
            self.log(f"{name}: {elapsed * 1000:.0f} ms")


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


class Engine:
    def __init__(
        self, nets: Networks, arch: Arch, device: torch.device, half: bool, cache_size: int = 0
    ) -> None:
        self.nets = nets
        self.arch = arch
        self.device = device
        # float16 autocast only makes sense (and is only offered by the official code) on CUDA
        self.half = half and device.type == "cuda"
        self.cache = PortraitCache(cache_size)

    @classmethod
    def load(
        cls,
        weights_dir: Path | str,
        *,
        device: str | None = None,
        half: bool = False,
        threads: int | None = None,
        arch: str | Arch = "full",
        cache_size: int = 0,
        compile_networks: bool = False,
    ) -> Engine:
        if threads:
            torch.set_num_threads(threads)
        arch_obj = get_arch(arch) if isinstance(arch, str) else arch
        nets = load_networks(weights_dir, arch_obj)
        nets.decoder.fold_spectral_norm()
        dev = pick_device(device)
        for module in nets.modules():
            module.to(dev)
        if compile_networks:
            # W and G are nearly all of the time; compilation happens lazily on the first edit
            # (and again for each new batch size), so workers should warm up before serving.
            nets.warping = torch.compile(nets.warping, dynamic=False)  # type: ignore[assignment]
            nets.decoder = torch.compile(nets.decoder, dynamic=False)  # type: ignore[assignment]
        return cls(nets, arch_obj, dev, half, cache_size)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.half:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # -- per portrait -------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, params: EditParams, timer: _Timer) -> PreparedPortrait:
        # Detection, the crop and the network input all work on the image after the official
        # loader's 1,280 px limit; paste-back goes onto the full-resolution original (`limited_to`).
        with timer.stage("limit"):
            limited, limited_to = limit_input(image)
        must_find = params.flag_do_crop or params.enable_safety_checker
        face = None
        found = 0
        if must_find or params.flag_lip_zero:
            # Lip zero alone only refines an uncropped edit, so it does not pay for the fallbacks
            # (up to seconds on an image without a face): the upright pass only.
            passes = PASSES if must_find else PASSES[:1]
            with timer.stage("detect"):
                faces = get_detector().detect(limited, passes)
            found = len(faces)
            if faces:
                if params.face_index >= len(faces):
                    raise FaceIndexError(
                        f"face_index {params.face_index} is past the faces found: {len(faces)} "
                        f"face(s), so face_index must be below {len(faces)}"
                    )
                face = faces[params.face_index]  # largest first
                if timer.log is not None:
                    which = "the largest" if params.face_index == 0 else f"number {params.face_index} by size"
                    timer.log(f"found {len(faces)} face(s) ({face.found_by}); editing {which}")
            elif params.enable_safety_checker:
                raise NoFaceError("no face detected in the image (safety checker); send a portrait")
            elif params.flag_do_crop:
                raise NoFaceError("no face found to crop; send a portrait or set flag_do_crop to false")

        with timer.stage("crop"):
            if params.flag_do_crop and face is not None:
                m_o2c, m_c2o = crop_transform(
                    face.landmarks,
                    dsize=params.dsize,
                    scale=params.scale,
                    vx_ratio=params.vx_ratio,
                    vy_ratio=params.vy_ratio,
                    flag_do_rot=params.flag_do_rot,
                )
                crop = warp_crop(limited, m_o2c, params.dsize)
                source_np = network_input(crop)
                m_c2o_full: np.ndarray | None = limited_to @ m_c2o
            else:
                source_np = whole_image_input(limited)
                m_c2o_full = None
            source = torch.from_numpy(source_np).to(self.device)

        # Always float32, also with HALF_PRECISION: float16 moves the motion extractor's keypoints
        # and with them the whole edit (up to 14 grey levels in a CPU emulation of float16, against
        # 1 when only the warping module and decoder run in half). These two networks are a small
        # share of an edit and their results are cached per portrait.
        with torch.inference_mode():
            with timer.stage("appearance"):
                feature = self.nets.appearance(source)
            with timer.stage("motion"):
                raw = {k: v.float() for k, v in self.nets.motion(source).items()}
        motion = kp.source_motion(raw)
        x_s = kp.source_keypoints(motion)
        lip_ratio = lip_open_ratio(face.landmarks) if face is not None else None
        return PreparedPortrait(
            image, m_c2o_full, params.dsize, feature, motion, x_s, lip_ratio, source_np, found
        )

    # -- per edit -----------------------------------------------------------------------------
    def driving_keypoints(self, prep: PreparedPortrait, params: EditParams) -> torch.Tensor:
        delta_exp, delta_rot = kp.expression_deltas(params.model_dump(), self.arch.num_kp)
        with torch.inference_mode():
            x_d = kp.driving_keypoints(prep.motion, delta_exp.to(self.device), delta_rot)
            x_d = kp.stitch(self.nets.stitching, prep.x_s, x_d)
            if (
                params.flag_lip_zero
                and prep.lip_ratio is not None
                and prep.lip_ratio >= kp.LIP_ZERO_THRESHOLD
            ):
                x_d = x_d + kp.lip_delta(self.nets.lip, prep.x_s, prep.lip_ratio, 0.0)
        return x_d

    def render(self, prep: PreparedPortrait, params: EditParams, timer: _Timer) -> np.ndarray:
        outcome = self.render_batch([prep], [params], [timer])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @staticmethod
    def _still_wanted(timers: list[_Timer], indices: list[int], outcomes: list[Any]) -> list[int]:
        """The indices whose `check` passes; a raising check (cancellation) ends only its item."""
        kept = []
        for i in indices:
            try:
                if timers[i].check is not None:
                    timers[i].check()
                kept.append(i)
            except Exception as exc:
                outcomes[i] = exc
        return kept

    def _finish_crop(self, crop: np.ndarray, prep: PreparedPortrait, params: EditParams) -> np.ndarray:
        if prep.m_c2o is None:
            # flag_do_crop=false: the official image path returns the decoded 512x512 image as it
            # is, whatever flag_pasteback and dsize say (there is no crop to paste back).
            return crop
        if params.flag_pasteback:
            return paste_back(crop, prep.m_c2o, prep.image, crop_size=prep.crop_size)
        return resize_crop(crop, prep.crop_size)

    def render_batch(
        self, preps: list[PreparedPortrait], params: list[EditParams], timers: list[_Timer]
    ) -> list[np.ndarray | Exception]:
        """Warp and decode several edits in one pass of W and G (the expensive part on a GPU,
        where a batch costs little more than one edit), then paste each back on its own. An item
        whose check raises, or whose own step fails, at any point drops out; the others go on.
        Each item is charged its share of the shared pass (`warping`, `decoder`)."""
        outcomes: list[Any] = [None] * len(preps)
        live = self._still_wanted(timers, list(range(len(preps))), outcomes)
        x_d_parts: list[torch.Tensor] = []
        for i in list(live):
            try:
                x_d_parts.append(self.driving_keypoints(preps[i], params[i]))
            except Exception as exc:  # the item's own failure
                outcomes[i] = exc
                live.remove(i)
        if not live:
            return outcomes
        x_d = torch.cat(x_d_parts)
        x_s = torch.cat([preps[i].x_s for i in live])
        feature = torch.cat([preps[i].feature for i in live]) if len(live) > 1 else preps[live[0]].feature
        with torch.inference_mode(), self.autocast():
            start = time.perf_counter()
            warped = self.nets.warping(feature, kp_driving=x_d, kp_source=x_s)["out"]
            mid = time.perf_counter()
            kept = self._still_wanted(timers, live, outcomes)
            if not kept:
                return outcomes
            if len(kept) < len(live):
                warped = warped[[live.index(i) for i in kept]]
            out = self.nets.decoder(warped)
            end = time.perf_counter()
        # truncation, not rounding, as the official output conversion does
        crops = (
            (out.float().permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
        )
        for j, i in enumerate(kept):
            timers[i].record("warping", (mid - start) / len(live))
            timers[i].record("decoder", (end - mid) / len(kept))
            try:
                # A cancellation that arrived during the shared pass ends only its own item here.
                with timers[i].stage("pasteback"):
                    outcomes[i] = self._finish_crop(crops[j], preps[i], params[i])
            except Exception as exc:
                outcomes[i] = exc
        return outcomes

    def _prepared(self, image: bytes, params: EditParams, timer: _Timer, max_pixels: int) -> PreparedPortrait:
        key = portrait_key(image, params) if self.cache.size > 0 else None
        prep = self.cache.get(key) if key is not None else None
        if prep is not None:
            if timer.log is not None:
                timer.log("portrait already prepared (cache hit): skipping detection and feature extraction")
            return prep
        with timer.stage("decode"):
            rgb = decode_image(image, max_pixels=max_pixels)
        prep = self.prepare(rgb, params, timer)
        if key is not None:
            self.cache.put(key, prep)
        return prep

    def _finish(self, result: np.ndarray, params: EditParams, timer: _Timer, own_s: float) -> EditResult:
        """Encode; `own_s` is the time spent on this item so far (its `total` goes on from there)."""
        start = time.perf_counter()
        with timer.stage("encode"):
            data, content_type = encode_image(result, params.output_format)
        timer.timings["total"] = own_s + (time.perf_counter() - start)
        height, width = result.shape[:2]
        return EditResult(data, content_type, width, height, timer.timings)

    def edit(
        self,
        image: bytes,
        params: EditParams,
        *,
        log: LogFn | None = None,
        check: CheckFn | None = None,
        max_pixels: int = 40_000_000,
    ) -> EditResult:
        timer = _Timer(log, check)
        start = time.perf_counter()
        prep = self._prepared(image, params, timer, max_pixels)
        result = self.render(prep, params, timer)
        return self._finish(result, params, timer, time.perf_counter() - start)

    def edit_batch(
        self, items: list[BatchItem], *, max_pixels: int = 40_000_000
    ) -> list[EditResult | Exception]:
        """Several edits at once: each portrait is prepared on its own, then the rest go through W
        and G as one batch. A failure or cancellation of one item at any stage ends only that
        item. An error of the shared pass itself (out of memory, a time limit) is raised.

        An item's `total` is its own preparation, its share of the shared pass, and its own
        paste-back and encoding; never the other items' preparation."""
        outcomes: list[EditResult | Exception] = [RuntimeError("not run")] * len(items)
        ready: list[tuple[int, PreparedPortrait, _Timer, float]] = []
        for i, item in enumerate(items):
            timer = _Timer(item.log, item.check)
            start = time.perf_counter()
            try:
                prep = self._prepared(item.image, item.params, timer, max_pixels)
            except Exception as exc:  # the item's own failure: bad image, no face, cancelled
                outcomes[i] = exc
                continue
            ready.append((i, prep, timer, time.perf_counter() - start))
        if not ready:
            return outcomes
        shared_start = time.perf_counter()
        timers = [timer for _, _, timer, _ in ready]
        preps = [prep for _, prep, _, _ in ready]
        rendered = self.render_batch(preps, [items[i].params for i, *_ in ready], timers)
        # The shared section less the items' own paste-backs, split evenly; with each item's own
        # paste-back added back, the items' totals add up to the batch's wall time.
        pastebacks = sum(t.timings.get("pasteback", 0.0) for t in timers)
        share = max(0.0, time.perf_counter() - shared_start - pastebacks) / len(ready)
        for (i, _, timer, prep_s), result in zip(ready, rendered, strict=True):
            if isinstance(result, Exception):
                outcomes[i] = result
                continue
            timer.timings["batch_size"] = float(len(ready))
            own_s = prep_s + share + timer.timings.get("pasteback", 0.0)
            try:
                outcomes[i] = self._finish(result, items[i].params, timer, own_s)
            except Exception as exc:  # a cancellation before encoding, or the encoder's own failure
                outcomes[i] = exc
        return outcomes
