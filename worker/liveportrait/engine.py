"""The image edit, end to end: decode, detect, crop, the four networks, paste back, encode.

`Engine.load` builds and loads the networks once; `Engine.edit` is then called for every request.
The per-portrait half (`prepare`) is separate from the per-edit half (`render`) so that callers
can reuse a prepared portrait for several edits.
"""

from __future__ import annotations

import contextlib
import time
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
from .face import Face
from .face_finder import FaceFinder, load_face_finder
from .imageio import decode_image, encode_image
from .pasteback import paste_back, resize_crop
from .portrait_cache import PortraitCache, PreparedPortrait, portrait_key
from .stage_timer import CheckFn, LogFn, StageTimer, Trace
from .weights import Networks, load_networks


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


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


class Engine:
    def __init__(
        self,
        nets: Networks,
        arch: Arch,
        device: torch.device,
        half: bool,
        faces: FaceFinder,
        cache_size: int = 0,
    ) -> None:
        self.nets = nets
        self.faces = faces
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
        faces = load_face_finder(weights_dir, dev, threads)
        return cls(nets, arch_obj, dev, half, faces, cache_size)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.half:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # -- per portrait -------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, params: EditParams, timer: StageTimer) -> PreparedPortrait:
        trace = timer.trace
        # Detection, the crop and the network input all work on the image after the official
        # loader's 1,280 px limit; paste-back goes onto the full-resolution original (`limited_to`).
        with timer.stage("limit"):
            limited, limited_to = limit_input(image)
        if trace is not None:
            trace["limited"] = limited
        face, found = self._find_face(limited, params, timer, trace)
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
                if trace is not None:
                    # The network input is exactly the 256 crop over 255.
                    crop256 = np.rint(source_np[0].transpose(1, 2, 0) * 255).astype(np.uint8)
                    trace.update(crop_M_o2c=m_o2c, crop_M_c2o=m_c2o, crop_img512=crop, crop_img256=crop256)
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
        lip_ratio = None
        if face is not None and params.flag_lip_zero:
            with timer.stage("lip_ratio"):
                lip_ratio = self.faces.lip_ratio(limited, face, trace)
        if trace is not None:
            trace["e2e_x_s"] = x_s.cpu().numpy()
        return PreparedPortrait(
            image, m_c2o_full, params.dsize, feature, motion, x_s, lip_ratio, source_np, found
        )

    def _find_face(
        self, limited: np.ndarray, params: EditParams, timer: StageTimer, trace: Trace
    ) -> tuple[Face | None, int]:
        """The face to edit (None when the edit needs none) and how many were found; raises when
        one is needed and missing."""
        must_find = params.flag_do_crop or params.enable_safety_checker
        if not (must_find or params.flag_lip_zero):
            return None, 0
        # Lip zero alone only refines an uncropped edit, so it does not pay for the fallbacks
        # (up to seconds on an image without a face with dlib): the upright pass only.
        with timer.stage("detect"):
            found = self.faces.find(limited, face_index=params.face_index, thorough=must_find, trace=trace)
        if found.count and found.face is None:
            raise FaceIndexError(
                f"face_index {params.face_index} is past the faces found: {found.count} "
                f"face(s), so face_index must be below {found.count}"
            )
        if found.face is not None:
            if timer.log is not None:
                which = "the largest" if params.face_index == 0 else f"number {params.face_index} by size"
                timer.log(f"found {found.count} face(s) ({found.face.found_by}); editing {which}")
        elif params.enable_safety_checker:
            raise NoFaceError("no face detected in the image (safety checker); send a portrait")
        elif params.flag_do_crop:
            raise NoFaceError("no face found to crop; send a portrait or set flag_do_crop to false")
        return found.face, found.count

    # -- per edit -----------------------------------------------------------------------------
    def driving_keypoints(
        self, prep: PreparedPortrait, params: EditParams, trace: Trace = None
    ) -> torch.Tensor:
        delta_exp, delta_rot = kp.expression_deltas(params.model_dump(), self.arch.num_kp)
        with torch.inference_mode():
            x_d = kp.driving_keypoints(prep.motion, delta_exp.to(self.device), delta_rot)
            if trace is not None:
                trace["e2e_x_d"] = x_d.cpu().numpy()
            x_d = kp.stitch(self.nets.stitching, prep.x_s, x_d)
            if trace is not None:
                trace["e2e_x_d_stitched"] = x_d.cpu().numpy()
            # Compared in float32, as the official code compares the ratio it computed in float32.
            lip_zero = (
                params.flag_lip_zero
                and prep.lip_ratio is not None
                and np.float32(prep.lip_ratio) >= np.float32(kp.LIP_ZERO_THRESHOLD)
            )
            if lip_zero:
                assert prep.lip_ratio is not None
                x_d = x_d + kp.lip_delta(self.nets.lip, prep.x_s, prep.lip_ratio, 0.0)
            if trace is not None:
                trace.update(e2e_lip_zero_applied=np.bool_(lip_zero), e2e_x_d_final=x_d.cpu().numpy())
        return x_d

    def render(self, prep: PreparedPortrait, params: EditParams, timer: StageTimer) -> np.ndarray:
        outcome = self.render_batch([prep], [params], [timer])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @staticmethod
    def _still_wanted(timers: list[StageTimer], indices: list[int], outcomes: list[Any]) -> list[int]:
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
        self, preps: list[PreparedPortrait], params: list[EditParams], timers: list[StageTimer]
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
                x_d_parts.append(self.driving_keypoints(preps[i], params[i], timers[i].trace))
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
                if timers[i].trace is not None:
                    timers[i].trace["e2e_image512"] = crops[j]
                with timers[i].stage("pasteback"):
                    outcomes[i] = self._finish_crop(crops[j], preps[i], params[i])
            except Exception as exc:
                outcomes[i] = exc
        return outcomes

    def _prepared(
        self, image: bytes, params: EditParams, timer: StageTimer, max_pixels: int
    ) -> PreparedPortrait:
        # A traced edit runs every stage, so it neither reads nor fills the cache.
        key = portrait_key(image, params) if self.cache.size > 0 and timer.trace is None else None
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

    def _finish(self, result: np.ndarray, params: EditParams, timer: StageTimer, own_s: float) -> EditResult:
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
        trace: Trace = None,
    ) -> EditResult:
        """One edit. `trace`, when given, is filled with every stage's arrays under the face
        kit's names (detector input and outputs, faces, landmarks, crops, keypoints, the decoded
        512 image and the final one)."""
        timer = StageTimer(log, check, trace)
        start = time.perf_counter()
        prep = self._prepared(image, params, timer, max_pixels)
        result = self.render(prep, params, timer)
        if trace is not None:
            trace["pasteback"] = result
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
        ready: list[tuple[int, PreparedPortrait, StageTimer, float]] = []
        for i, item in enumerate(items):
            timer = StageTimer(item.log, item.check)
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
