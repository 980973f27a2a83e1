"""The gated model: every ConvNeXt size end to end, routing that really skips the experts, bf16 and channels_last,
and the backbone's error paths and local pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from core.errors import ConfigError
from core.model import (CONVNEXT_SIZES, GatedMultiTaskModel, ModelOutput, MultiTaskLoss, backbone_normalization,
                        task_routes)

SIZE = 64
FAST_SIZES = ("convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano")


def _batch(tasks: list[int], size: int = SIZE, seed: int = 0) -> dict[str, torch.Tensor]:
    """A mixed batch the way the dataset's collate makes it."""
    gen = torch.Generator().manual_seed(seed)
    n = len(tasks)
    task = torch.tensor(tasks)
    is_seg = task == 0
    mask = (torch.rand(n, 5, size, size, generator=gen) > 0.95).to(torch.uint8) * is_seg.view(-1, 1, 1, 1)
    return {
        "image": torch.randn(n, 3, size, size, generator=gen),
        "task": task,
        "task_vector": torch.nn.functional.one_hot(task, 2).float(),
        "mask": mask,
        "mask_valid": is_seg,
        "dr": torch.where(is_seg, -100, torch.randint(0, 5, (n,), generator=gen)),
        "dme": torch.where(is_seg, -100, torch.randint(0, 3, (n,), generator=gen)),
    }


def _has_grad(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())


@pytest.fixture(scope="module")
def atto() -> GatedMultiTaskModel:
    torch.manual_seed(0)
    return GatedMultiTaskModel("convnext_atto").eval()


def _force_gate(model: GatedMultiTaskModel, choices: list[int]) -> torch.utils.hooks.RemovableHandle:
    """Make the gate pick ``choices`` (0 seg, 1 cls) per sample, whatever the image."""
    forced = torch.nn.functional.one_hot(torch.tensor(choices), 2).float() * 10 - 5
    return model.gate.register_forward_hook(lambda module, args, out: forced.to(out.dtype))


class Calls:
    """Records what a module's forward was called with."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(lambda m, args, out: self.inputs.append(args[0].detach()))

    def __enter__(self) -> Calls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# --- every backbone size, forward and backward ----------------------------------------------------------------------


@pytest.mark.parametrize("backbone", [
    *FAST_SIZES,
    *(pytest.param(name, marks=pytest.mark.slow) for name in CONVNEXT_SIZES if name not in FAST_SIZES),
])
def test_forward_backward_every_size(backbone: str) -> None:
    torch.manual_seed(0)
    model = GatedMultiTaskModel(backbone).train()
    batch = _batch([0, 1, 0])
    out = model(batch["image"], route="oracle", task=batch["task"])

    assert out.gate_logits.shape == (3, 2) and out.gate_probs.shape == (3, 2)
    assert out.seg_index.tolist() == [0, 2] and out.cls_index.tolist() == [1]
    assert out.seg_logits.shape == (2, 5, SIZE, SIZE)
    assert out.dr_logits.shape == (1, 5) and out.dme_logits.shape == (1, 3)
    for tensor in (out.gate_logits, out.seg_logits, out.dr_logits, out.dme_logits):
        assert torch.isfinite(tensor).all()

    total, parts = MultiTaskLoss()(out, batch)
    assert torch.isfinite(total)
    total.backward()
    for part in (model.gate, model.backbone, model.decoder, model.classifier):
        assert _has_grad(part), type(part).__name__
    assert parts["n_seg_samples"] == 2 and parts["n_cls_samples"] == 1


def test_feature_pyramid_of_atto(atto: GatedMultiTaskModel) -> None:
    assert atto.backbone.reductions == (4, 8, 16, 32)
    assert atto.backbone.channels == (40, 80, 160, 320)
    counts = atto.num_parameters()
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert "convnext_atto" in atto.summary()


def test_gate_loss_alone_reaches_gate_and_backbone() -> None:
    torch.manual_seed(0)
    model = GatedMultiTaskModel("convnext_atto").train()
    batch = _batch([0, 1])
    out = model(batch["image"], route="gate")
    total, parts = MultiTaskLoss(seg_weight=0.0, cls_weight=0.0, gate_weight=1.0)(out, batch)
    assert total.item() == pytest.approx(parts["gate"], rel=1e-6)
    total.backward()
    assert _has_grad(model.gate) and _has_grad(model.backbone)


def test_odd_input_size_gives_masks_at_input_resolution(atto: GatedMultiTaskModel) -> None:
    with torch.no_grad():
        out = atto(torch.randn(1, 3, 72, 100), route="both")
    assert out.seg_logits.shape == (1, 5, 72, 100)


def test_hparams_rebuild_the_same_architecture(atto: GatedMultiTaskModel) -> None:
    rebuilt = GatedMultiTaskModel(**atto.hparams)
    rebuilt.load_state_dict(atto.state_dict(), strict=True)


# --- routing ----------------------------------------------------------------------------------------------------


def test_gate_bias_sends_everything_to_segmentation() -> None:
    model = GatedMultiTaskModel("convnext_atto").eval()
    with torch.no_grad():
        model.gate.last.weight.zero_()
        model.gate.last.bias.copy_(torch.tensor([10.0, -10.0]))
    images = torch.randn(3, 3, SIZE, SIZE)
    with Calls(model.decoder) as seg, Calls(model.classifier) as cls, torch.no_grad():
        out = model(images, route="gate")
    assert len(seg.inputs) == 1 and torch.equal(seg.inputs[0], images)
    assert cls.inputs == [] and out.dr_logits is None and out.dme_logits is None
    assert out.route.tolist() == [[True, False]] * 3
    assert out.chosen_task().tolist() == [0, 0, 0]


@pytest.mark.parametrize("choices", [[0, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]])
def test_gate_route_feeds_the_decoder_only_its_samples(atto: GatedMultiTaskModel, choices: list[int]) -> None:
    images = torch.randn(len(choices), 3, SIZE, SIZE)
    seg_rows = [i for i, c in enumerate(choices) if c == 0]
    cls_rows = [i for i, c in enumerate(choices) if c == 1]
    handle = _force_gate(atto, choices)
    try:
        with Calls(atto.decoder) as seg, Calls(atto.classifier) as cls, torch.no_grad():
            out = atto(images, route="gate")
    finally:
        handle.remove()
    assert len(seg.inputs) == 1 and torch.equal(seg.inputs[0], images[seg_rows])
    assert len(cls.inputs) == 1 and cls.inputs[0].shape[0] == len(cls_rows)
    assert out.seg_index.tolist() == seg_rows and out.cls_index.tolist() == cls_rows
    assert out.seg_logits.shape[0] == len(seg_rows) and out.dr_logits.shape[0] == len(cls_rows)
    assert out.route[:, 0].tolist() == [c == 0 for c in choices]

    # Per-sample normalisation everywhere: the routed rows equal what running every sample on both heads gives.
    with torch.no_grad():
        both = atto(images, route="both")
    torch.testing.assert_close(out.seg_logits, both.seg_logits[seg_rows], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.dr_logits, both.dr_logits[cls_rows], rtol=1e-4, atol=1e-4)


def test_decoder_does_not_run_when_nobody_is_routed_to_it(atto: GatedMultiTaskModel) -> None:
    handle = _force_gate(atto, [1, 1, 1])
    try:
        with Calls(atto.decoder) as seg, torch.no_grad():
            out = atto(torch.randn(3, 3, SIZE, SIZE), route="gate")
    finally:
        handle.remove()
    assert seg.inputs == []
    assert out.seg_logits is None and out.seg_index.numel() == 0
    assert out.dr_logits.shape == (3, 5)


def test_route_both_runs_both_experts_on_every_sample(atto: GatedMultiTaskModel) -> None:
    images = torch.randn(3, 3, SIZE, SIZE)
    with Calls(atto.decoder) as seg, Calls(atto.classifier) as cls, torch.no_grad():
        out = atto(images, route="both")
    assert torch.equal(seg.inputs[0], images) and cls.inputs[0].shape[0] == 3
    assert out.route.all() and out.seg_logits.shape[0] == 3 and out.dme_logits.shape == (3, 3)


@pytest.mark.parametrize("task, seg_rows, cls_rows", [
    (torch.tensor([0, 1, 1, 0]), [0, 3], [1, 2]),
    (torch.tensor([1, 1, 1, 1]), [], [0, 1, 2, 3]),
    (torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]]), [0, 1], [1, 2]),  # multi-hot: sample 1 goes to both
    (torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), [0, 1, 3], [0, 2, 3]),
    (torch.tensor([[True, False], [False, True], [True, True], [False, True]]), [0, 2], [1, 2, 3]),
])
def test_oracle_route_follows_the_true_task(atto: GatedMultiTaskModel, task: torch.Tensor, seg_rows: list[int],
                                            cls_rows: list[int]) -> None:
    handle = _force_gate(atto, [1, 0, 1, 0])  # the gate disagrees; oracle must ignore it
    images = torch.randn(4, 3, SIZE, SIZE)
    try:
        with Calls(atto.decoder) as seg, torch.no_grad():
            out = atto(images, route="oracle", task=task)
    finally:
        handle.remove()
    assert out.seg_index.tolist() == seg_rows and out.cls_index.tolist() == cls_rows
    if seg_rows:
        assert torch.equal(seg.inputs[0], images[seg_rows])
    else:
        assert seg.inputs == [] and out.seg_logits is None
    assert out.chosen_task().tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("kwargs, match", [
    ({"route": "oracle"}, "needs the true task"),
    ({"route": "oracle", "task": torch.tensor([0, 1, 2])}, "0 .segmentation. or 1"),
    ({"route": "oracle", "task": torch.tensor([0, 1])}, "shape"),
    ({"route": "oracle", "task": torch.tensor([0.0, 1.0, 0.0])}, "integer"),
    ({"route": "sometimes"}, "unknown route"),
])
def test_bad_routes_raise(atto: GatedMultiTaskModel, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match), torch.no_grad():
        atto(torch.randn(3, 3, SIZE, SIZE), **kwargs)


def test_task_routes_from_ids_and_vectors() -> None:
    assert task_routes(torch.tensor([0, 1]), 2).tolist() == [[True, False], [False, True]]
    assert task_routes(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), 2).tolist() == [[False, True], [True, True]]


def test_model_output_detach_and_chosen_task() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]], requires_grad=True)
    out = ModelOutput(logits, logits.softmax(1), torch.tensor([[True, False], [False, True]]), torch.tensor([0]),
                      None, torch.tensor([1]), torch.zeros(1, 5), torch.zeros(1, 3))
    assert out.chosen_task().tolist() == [0, 1] and out.batch_size == 2
    detached = out.detach()
    assert not detached.gate_logits.requires_grad and detached.seg_logits is None


# --- precision and memory format ------------------------------------------------------------------------------------


def test_bf16_autocast_and_channels_last_on_cpu() -> None:
    torch.manual_seed(0)
    model = GatedMultiTaskModel("convnext_atto").train().to(memory_format=torch.channels_last)
    batch = _batch([0, 1, 0, 1])
    images = batch["image"].contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, route="both")
        total, parts = MultiTaskLoss()(out, batch)
    assert out.seg_logits.shape == (4, 5, SIZE, SIZE) and out.dr_logits.shape == (4, 5)
    assert out.seg_logits.dtype == torch.bfloat16 and out.gate_logits.dtype == torch.bfloat16
    assert out.gate_probs.dtype == torch.float32 and total.dtype == torch.float32
    for tensor in (out.gate_logits, out.seg_logits, out.dr_logits, out.dme_logits):
        assert torch.isfinite(tensor.float()).all()
    total.backward()
    assert torch.isfinite(total) and _has_grad(model.gate) and _has_grad(model.backbone)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_channels_last_float32_matches_contiguous(atto: GatedMultiTaskModel) -> None:
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        reference = atto(images, route="both")
        atto.to(memory_format=torch.channels_last)
        try:
            out = atto(images.contiguous(memory_format=torch.channels_last), route="both")
        finally:
            atto.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out.seg_logits, reference.seg_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.gate_logits, reference.gate_logits, rtol=1e-4, atol=1e-4)


# --- backbone: names, normalisation, local weights ------------------------------------------------------------------


def test_unknown_backbone_names_itself_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="resnet50") as error:
        GatedMultiTaskModel("resnet50")
    assert "convnext_atto" in str(error.value) and "convnext_base" in str(error.value)
    with pytest.raises(ConfigError, match="convnext_huge"):
        backbone_normalization("convnext_huge")


def test_normalization_comes_from_the_registry_without_building(monkeypatch: pytest.MonkeyPatch,
                                                                atto: GatedMultiTaskModel) -> None:
    expected = atto.normalization
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("backbone_normalization built a model"))
    assert backbone_normalization("convnext_atto") == expected == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert backbone_normalization("convnext_atto.d2_in1k") == expected


def test_missing_pretrained_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        GatedMultiTaskModel(pretrained_weights=tmp_path / "nope.safetensors")


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_local_pretrained_weights_are_loaded(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    source = timm.create_model("convnext_atto", pretrained=False)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"atto.{suffix}"
    save_file(state, str(path)) if suffix == "safetensors" else torch.save(state, path)

    model = GatedMultiTaskModel("convnext_atto", pretrained_weights=path)
    loaded = model.backbone.body.state_dict()
    assert len(loaded) == len([k for k in state if not k.startswith("head.")])
    for key, value in loaded.items():
        original = key.replace("stem_", "stem.").replace("stages_", "stages.")
        assert torch.equal(value, state[original]), key


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "femto.pth"
    torch.save(timm.create_model("convnext_femto", pretrained=False).state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit backbone convnext_atto"):
        GatedMultiTaskModel("convnext_atto", pretrained_weights=path)


def test_checkpoint_with_foreign_keys_is_not_silently_ignored(tmp_path: Path) -> None:
    """timm loads features_only weights non-strictly; a file whose keys match nothing must not pass as loaded."""
    path = tmp_path / "features.pth"
    torch.save(timm.create_model("convnext_atto", pretrained=False, features_only=True).state_dict(), path)
    with pytest.raises(ConfigError, match="weights missing"):
        GatedMultiTaskModel("convnext_atto", pretrained_weights=path)


def test_multiscale_pooling_reads_every_stage_with_mean_and_max() -> None:
    from core.model.gated import pool

    features = [torch.zeros(2, c, 8 // (i + 1), 8 // (i + 1)) for i, c in enumerate((3, 4, 5, 6))]
    features[0][0, 1, 0, 0] = 8.0  # one bright pixel in the shallowest map of sample 0
    pooled = pool(features, "multiscale")
    assert pooled.shape == (2, 2 * (3 + 4 + 5 + 6))
    assert pooled[0, 3 + 1].item() == 8.0  # the max keeps the single pixel that the mean dilutes
    assert pooled[0, 1].item() == pytest.approx(8.0 / 64)
    assert pool(features, "avg").shape == (2, 6)
    model = GatedMultiTaskModel(decoder_channels=(16, 16, 16, 8), gate_hidden=8, pooling="multiscale")
    out = model(torch.randn(2, 3, 64, 64), route="both")
    assert out.dr_logits.shape == (2, 5) and out.gate_logits.shape == (2, 2)
    with pytest.raises(ValueError, match="pooling"):
        GatedMultiTaskModel(pooling="median")
