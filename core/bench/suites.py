"""The six measurements of ``python -m core bench``; each returns its rows of results.

Every target is a ratio of two timings taken in this process, interleaved where the two workloads can be
(see ``timing.interleaved_medians``), so that load from other processes on a shared machine biases neither side.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from core import project_root
from core.bench.peak import compute_threads, measure_kernels, reference_kernels, theoretical_peak
from core.bench.report import Result
from core.bench.timing import interleaved_medians, median_seconds, synchronize
from core.bench.workloads import Setting, gated_model, mixed_batch, single_task_models, steer_gate, train_step
from core.data.cache import PreprocessCache
from core.data.dataset import IdridDataset, collate
from core.vocabulary import NUM_LESIONS

ROOT = project_root()  # $IDRID_STUDIO_HOME, else this checkout, else the cwd (an installed package)


@dataclass
class Plan:
    """How much of each measurement to run: ``quick`` is the CI smoke test, ``full`` the figures we quote."""

    setting: Setting  # the training workload (routing, sharing, FLOP/s)
    repeats: int
    data_images: int  # real photographs read by the data benchmark (0: all)
    data_workers: int
    inference_size: int
    tiled_scale: float | None  # None: slide windows over the full original resolution
    folder_images: int  # photographs in the folder-prediction measurement
    memory_sizes: tuple[int, ...]
    quick: bool = False  # the smaller kernel set of the compute reference


# -- 1. routing ------------------------------------------------------------------------------------------------

def routing(plan: Plan) -> tuple[list[Result], float]:
    """A training step routed by the gate against the same model running both experts on every sample.

    Returns the results and the routed step's images/s, which the data benchmark compares the loader against.
    """
    setting = plan.setting
    batch = mixed_batch(setting)
    routed_model, both_model = gated_model(setting), gated_model(setting)
    handle = steer_gate(routed_model, batch["task"])
    times = interleaved_medians({"gate": train_step(routed_model, setting, batch, "gate"),
                                 "both": train_step(both_model, setting, batch, "both")},
                                setting.device, plan.repeats)
    handle.remove()
    ratio = times["gate"] / times["both"]
    rate = setting.batch / times["gate"]
    how = f"{setting.describe()}, 50/50 batch, median of {plan.repeats}"
    return [
        Result.at_most("routing: routed step / both-heads step", ratio, "ratio", 0.75, how),
        Result("training step, routed", times["gate"], "s", detail=f"{rate:.2f} images/s"),
        Result("training step, both heads", times["both"], "s", detail=f"{setting.batch / times['both']:.2f} images/s"),
    ], rate


# -- 2. sharing ------------------------------------------------------------------------------------------------

def sharing(plan: Plan) -> list[Result]:
    """The multi-task model against a U-Net and a classifier with their own copies of the backbone.

    Both sides answer the same batch: without a gate nobody knows which model an image needs, so the two
    single-task models each run on every image. The routed figure is the product's case (the gate picks one
    expert per image); the both-heads figure isolates what sharing one backbone saves by itself.
    """
    setting = plan.setting
    batch = mixed_batch(setting)
    model = gated_model(setting).eval()
    handle = steer_gate(model, batch["task"])
    unet, classifier = single_task_models(setting)
    images = batch["image"]

    @torch.no_grad()
    def run(fn) -> None:
        with setting.autocast():
            fn()

    times = interleaved_medians({
        "routed": lambda: run(lambda: model(images, route="gate")),
        "both": lambda: run(lambda: model(images, route="both")),
        "separate": lambda: run(lambda: (unet(images), classifier(images))),
    }, setting.device, plan.repeats)
    handle.remove()
    how = f"forward passes, {setting.describe()}, median of {plan.repeats}"
    return [
        Result.at_most("sharing: multi-task (routed) / two single-task models", times["routed"] / times["separate"],
                       "ratio", 0.65, how),
        Result("sharing: multi-task (both heads) / two single-task models", times["both"] / times["separate"],
               "ratio", detail="the saving of one shared backbone alone"),
        Result("two single-task models, forward", times["separate"], "s",
               detail=f"{setting.batch / times['separate']:.2f} images/s"),
    ]


# -- 3. data ---------------------------------------------------------------------------------------------------

def _segmentation_samples(root: Path) -> list:
    from core.data.idrid import read_idrid
    from core.data.metadata import build_metadata, parse_metadata

    index = read_idrid(root, strict=False)
    metadata = parse_metadata(build_metadata(index, val_fraction=0.0), where=f"dataset {root}")
    return [s for s in metadata.samples if s.task == "segmentation"]


def real_photographs(shared: Path | None) -> tuple[list, str]:
    """Segmentation samples of ../shared/idrid (full-size JPEGs with their TIFF masks), if that folder exists."""
    candidates = [shared] if shared else [Path(os.environ.get("IDRID_SHARED", "/nonexistent")) / "idrid",
                                          ROOT.parent / "shared" / "idrid", Path("/work/shared/idrid")]
    for root in candidates:
        if (root / "A. Segmentation").is_dir():
            samples = _segmentation_samples(root)
            if samples:
                return samples, f"real IDRiD photographs in {root}"
    return [], ""


def synthetic_photographs(folder: Path, count: int) -> tuple[list, str]:
    """Full-size synthetic photographs (4288 wide), for a machine without the real files."""
    from core.data.synth.generate import generate_dataset

    if not folder.exists():
        generate_dataset(folder, n_seg=count, n_cls=1, width=4288, seed=0, progress=False)
    return _segmentation_samples(folder), "synthetic 4288-wide photographs"


def data(plan: Plan, train_images_per_s: float, shared: Path | None, scratch: Path) -> list[Result]:
    """Loader images/s decoding raw 4288x2848 files against reading the preprocessing cache."""
    from core.data.augment import build_augmentation
    from core.data.preprocess import PreprocessConfig
    from core.model.backbone import backbone_normalization

    samples, source = real_photographs(shared)
    if not samples:
        samples, source = synthetic_photographs(scratch / "synthetic", max(plan.data_images, 4))
    if plan.data_images:
        samples = samples[: plan.data_images]
    size = plan.setting.size
    mean, std = backbone_normalization(plan.setting.backbone)
    preprocess = PreprocessConfig(size, size)
    augment = build_augmentation("standard", preprocessed_clahe=True)

    def epoch(cache: PreprocessCache) -> float:
        dataset = IdridDataset(samples, preprocess, mean, std, cache, augment)
        loader = DataLoader(dataset, batch_size=4, collate_fn=collate, num_workers=plan.data_workers)
        started = time.perf_counter()
        count = sum(len(batch["id"]) for batch in loader)
        return count / (time.perf_counter() - started)

    raw = epoch(PreprocessCache(None))
    cache = PreprocessCache(scratch / "cache")
    first = epoch(cache)  # decodes and writes every entry
    # A cached epoch of 54 images lasts about a second, where a burst of load elsewhere weighs heavily: the median
    # of three (the raw epoch lasts long enough to average such bursts out by itself).
    cached = statistics.median(epoch(cache) for _ in range(3))
    how = f"{len(samples)} {source}, {size} px canvas, augmentation on, {plan.data_workers} workers, batch 4"
    step = f"training step {train_images_per_s:.2f} images/s (routed, above)"
    return [
        # What matters is whether the loader keeps the step fed; cached / raw moves with how fast this CPU decodes
        # JPEGs (11.6 on one Xeon, 7.5 on an EPYC whose raw decoding is faster), so it is information, not a target.
        Result.at_least("data: cached loading / training step", cached / train_images_per_s, "ratio", 2, step),
        Result("data: raw loading / training step", raw / train_images_per_s, "ratio",
               detail="below 1: training from raw files would wait for the loader"),
        Result("data: cached / raw loading", cached / raw, "ratio", detail=how),
        Result("loading raw files", raw, "images/s"),
        Result("loading, first epoch (fills the cache)", first, "images/s"),
        Result("loading from the cache", cached, "images/s"),
    ]


# -- 4. inference ----------------------------------------------------------------------------------------------

def _photograph_bytes(shared: Path | None, scratch: Path) -> tuple[bytes, str]:
    samples, source = real_photographs(shared)
    if samples:
        return samples[0].image.read_bytes(), f"{samples[0].image.name} ({source})"
    samples, source = synthetic_photographs(scratch / "synthetic", 4)
    return samples[0].image.read_bytes(), source


def _write_run(folder: Path, setting: Setting) -> Path:
    """A run folder with random weights: what ``Predictor.from_run`` reads in the cold-start measurement."""
    from core.config import Config
    from core.model.factory import build_model, model_signature
    from core.run.weights import save_weights
    from core.run.folder import RunDir

    config = Config(name="bench")
    config.data.image_size = setting.size
    config.model.backbone = setting.backbone
    run = RunDir(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    run.config.write_text(config.to_yaml())
    torch.manual_seed(0)
    save_weights(build_model(config.model), run.weights_file("best"), model_signature(config.model), torch.float16)
    return run.path


def all_outputs(predictor, data: bytes) -> dict:
    """Bytes to everything a user sees: gate, both experts, every lesion mask at the original size, the report."""
    prediction = predictor.predict(data, both=True)
    for channel in range(NUM_LESIONS):
        prediction.mask_original(channel)
    return prediction.report()


def inference(plan: Plan, shared: Path | None, scratch: Path) -> list[Result]:
    from core.infer.predictor import Predictor

    setting = replace(plan.setting, size=plan.inference_size, batch=1)
    photograph, source = _photograph_bytes(shared, scratch)
    run = _write_run(scratch / "run", setting)
    threads = torch.get_num_threads()
    if setting.device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 2))
    try:
        predictor = Predictor.from_run(run, device=setting.device.type)
        warm = median_seconds(lambda: all_outputs(predictor, photograph), setting.device, plan.repeats)
        size = predictor.predict(photograph).original_size
        scale = plan.tiled_scale or max(size) / setting.size
        started = time.perf_counter()
        probs, _ = predictor.segment_tiled(photograph, scale=scale)
        synchronize(setting.device)
        tiled = time.perf_counter() - started
        folder_rows = folder_prediction(predictor, plan.folder_images, shared, scratch)
    finally:
        torch.set_num_threads(threads)
    cold = cold_start(run, photograph, scratch, setting.device.type)
    how = f"{source}, {setting.backbone}, {setting.size} px, {min(2, os.cpu_count() or 2)} threads"
    return [
        Result.at_most("inference: one full-size JPEG, bytes to all outputs (warm)", warm, "s", 0.5, how),
        Result("inference: cold start (process start to first prediction)", cold, "s",
               detail="python -c: import, load the run, predict"),
        Result("inference: sliding windows", tiled, "s",
               detail=f"{probs.shape[2]}x{probs.shape[1]} canvas in {setting.size}-px windows, 25% overlap"),
        *folder_rows,
    ]


def _photograph_folder(count: int, shared: Path | None, scratch: Path) -> tuple[Path, str]:
    """``count`` full-size photographs in one folder: the real ones (repeated to the count), else synthetic ones."""
    samples, source = real_photographs(shared)
    if not samples:
        samples, source = synthetic_photographs(scratch / "synthetic", 4)
    folder = scratch / "folder"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        target = folder / f"{index:03d}{samples[index % len(samples)].image.suffix}"
        if not target.exists():
            target.symlink_to(samples[index % len(samples)].image.resolve())
    return folder, source


def folder_prediction(predictor, count: int, shared: Path | None, scratch: Path) -> list[Result]:
    """``python -m core predict`` on a folder (both experts, masks at the original size): the product's pipelined,
    batched path against the single-photograph loop it replaced (predict, then write, one photograph at a time)."""
    from core.infer.batch import list_inputs, predict_paths, prediction_row, write_masks

    folder, source = _photograph_folder(count, shared, scratch)
    files = list_inputs(folder)
    predictor.predict(files[0], both=True)  # warm-up: first-call allocations, as a long-running folder pays once

    def loop() -> None:
        for path in files:
            prediction = predictor.predict(path, both=True)
            prediction_row(path, prediction, 0.5, predictor.grades_source)
            write_masks(prediction, path, scratch / "loop", 0.5, "original")

    started = time.perf_counter()
    loop()
    one_at_a_time = time.perf_counter() - started
    started = time.perf_counter()
    predict_paths(predictor, folder, scratch / "pipelined", both=True, progress=False)
    pipelined = time.perf_counter() - started
    how = f"{count} {source}, both experts, 1-bit masks at the original size"
    return [
        Result.at_least("inference: folder, photographs/s (pipelined, batches of 4)", count / pipelined,
                        "images/s", 4, how),
        Result("inference: folder, pipelined / one-at-a-time loop", one_at_a_time / pipelined, "ratio",
               detail=f"loop {count / one_at_a_time:.2f} images/s: predict, then write, one photograph at a time"),
    ]


def _gate_photographs(plan: Plan, scratch: Path) -> tuple[Path, list[Path], str]:
    """The shipped run whose gate routes, and the photographs it routes: checkpoints/idrid on its own validation
    split of the real files (both halves) when they are here and it routes by its gate (``infer.route: gate``), else
    checkpoints/demo on full-size synthetic photographs of both kinds."""
    from core.config import load_config
    from core.errors import DataError
    from core.evaluate.runner import run_metadata
    from core.run.folder import RunDir

    idrid = RunDir(ROOT / "checkpoints" / "idrid")
    # a run that serves both experts, or one trained on one task (its gate never learned), does not route
    if idrid.config.exists() and load_config(idrid.config).infer.route == "gate" and len(idrid.trained_tasks()) == 2:
        try:
            samples = run_metadata(idrid, load_config(idrid.config).data, None, progress=False).split("val")
            source = f"the validation split of {idrid.name} (real IDRiD photographs, both halves)"
            if samples:
                return idrid.path, [s.image for s in samples], source
        except DataError:
            pass  # the real files are not on this machine
    from core.data.synth.generate import generate_dataset

    folder = scratch / "synthetic-gate"
    if not folder.exists():
        generate_dataset(folder, n_seg=4, n_cls=8, width=4288, seed=1, progress=False)
    files = sorted(folder.rglob("*.jpg"))  # the originals of both halves (masks are TIFFs)
    return ROOT / "checkpoints" / "demo", files, "full-size synthetic photographs (4 with masks, 8 graded)"


def shipped_gate(plan: Plan, scratch: Path) -> list[Result]:
    """Seconds per photograph with a shipped run's own gate deciding which expert runs, against both experts on
    every photograph (what ``predict --both`` does), in the same process, interleaved; and the share the gate sent
    to the decoder. Decoding is inside both timings: this is what a user's folder costs."""
    from core.infer.predictor import Predictor

    run, files, source = _gate_photographs(plan, scratch)
    if plan.quick:
        files = files[:6]
    threads = torch.get_num_threads()
    if plan.setting.device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 2))
    try:
        predictor = Predictor.from_run(run, device=plan.setting.device.type)
        routed = predictor.predict_many(files)
        segmented = sum("segmentation" in p.ran for p in routed)
        times = interleaved_medians({"gate": lambda: predictor.predict_many(files),
                                     "both": lambda: predictor.predict_many(files, both=True)},
                                    plan.setting.device, 1, warmup=0)  # one pass over the split lasts long enough
    finally:
        torch.set_num_threads(threads)
    n = len(files)
    how = (f"{n} photographs: {source}; {run.name} at its operating point {predictor.gate_threshold:g}, "
           f"batches of 4, decoding included")
    return [
        Result("gate: seconds a photograph, routed by the shipped gate", times["gate"] / n, "s", detail=how),
        Result("gate: seconds a photograph, both experts on every one", times["both"] / n, "s"),
        Result.at_most("gate: routed / both experts", times["gate"] / times["both"], "ratio", 1.0,
                       f"the decoder ran on {segmented} of {n}"),
        Result("gate: share sent to the lesion decoder", segmented / n, "ratio"),
    ]


def cold_start(run: Path, photograph: bytes, scratch: Path, device: str) -> float:
    path = scratch / "photograph.jpg"
    path.write_bytes(photograph)
    code = ("from core.infer.predictor import Predictor; from core.bench.suites import all_outputs; "
            f"all_outputs(Predictor.from_run({str(run)!r}, device={device!r}), open({str(path)!r}, 'rb').read())")
    env = dict(os.environ, OMP_NUM_THREADS="2")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


# -- 5. compute efficiency -------------------------------------------------------------------------------------

def efficiency(plan: Plan) -> list[Result]:
    """The routed training step's achieved FLOP/s against the fastest dense kernel's (``core.bench.peak``), both
    measured here and now, with the theoretical peak beside them where the CPU says enough to estimate it.

    The step is timed on its own, back to back as the training loop runs it (in the routing measurement it
    alternates with the heavier both-heads step, whose freed memory the allocator returns to the system, so each
    routed step there pays page faults a training loop does not).
    """
    setting = plan.setting
    batch = mixed_batch(setting)
    model = gated_model(setting)
    handle = steer_gate(model, batch["task"])
    step = train_step(model, setting, batch, "gate")
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    step_seconds = median_seconds(step, setting.device, plan.repeats)
    handle.remove()
    dtype = torch.bfloat16 if setting.bf16 else torch.float32
    measured = measure_kernels(reference_kernels(setting.device, dtype, plan.quick), setting.device,
                               max(3, plan.repeats))
    best, limit = max(measured, key=lambda item: item[1])
    achieved = flops / step_seconds
    results = [
        Result.at_least("compute: training step FLOP/s / best kernel FLOP/s", achieved / limit, "ratio", 0.5,
                        f"step {flops / 1e9:.1f} GFLOP (torch.utils.flop_counter) in {step_seconds:.2f} s; "
                        f"limit set by {best.name}"),
        Result("training step, achieved", achieved / 1e9, "GFLOP/s"),
    ]
    results += [Result(f"kernel: {kernel.name} {str(dtype).removeprefix('torch.')}", rate / 1e9, "GFLOP/s",
                       detail="the limit" if kernel is best else "") for kernel, rate in measured]
    peak = theoretical_peak(compute_threads()) if setting.device.type == "cpu" else None
    if peak is not None:
        results.append(Result("theoretical peak (estimate)", peak[0] / 1e9, "GFLOP/s", detail=peak[1]))
    return results


# -- 6. memory -------------------------------------------------------------------------------------------------

def memory(plan: Plan) -> list[Result]:
    """Peak memory of one training step and of one inference, each in a fresh process (peak RSS never falls)."""
    setting = plan.setting
    results = []
    for size in plan.memory_sizes:
        for kind in ("train", "infer"):
            batch = setting.batch if kind == "train" else 1
            args = [sys.executable, "-m", "core.bench.probe", kind, setting.backbone, str(size), str(batch),
                    setting.device.type, "bf16" if setting.bf16 else "fp32"]
            done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results.append(Result(f"memory: {kind} at {size} px", float("nan"), "MiB", detail=f"failed: {last}"))
                continue
            peak, baseline = map(float, done.stdout.split())
            what = "training step" if kind == "train" else "inference"
            unit = "MiB (GPU)" if setting.device.type == "cuda" else "MiB"
            results.append(Result(f"memory: {what} at {size} px, peak", peak, unit,
                                  detail=f"batch {batch}; {baseline:.0f} MiB held before the step (torch, model, batch)"))
    return results


def scratch_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="idrid-bench-")
