"""The model registry: shapes, parameter counts and FLOPs per image."""

from __future__ import annotations

import pytest
import torch

from annlib.models import (
    NUM_CLASSES,
    count_parameters,
    create_model,
    flops_per_image,
    model_summary,
    size_on_disk,
)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return create_model("resnet50")


def test_lenet5_parameters_flops_and_output():
    model = create_model("lenet5")

    assert count_parameters(model) == 64_851
    assert flops_per_image(model) == 839_256
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, NUM_CLASSES)


def test_lenet5_feature_maps_keep_the_papers_sizes():
    model = create_model("lenet5").eval()
    x = torch.rand(2, 1, 28, 28)
    sizes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d | torch.nn.AvgPool2d):
            sizes.append(tuple(x.shape[1:]))

    assert sizes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]


def test_resnet50_one_channel_input_and_cost(resnet50):
    resnet50.eval()
    with torch.no_grad():
        out = resnet50(torch.rand(2, 1, 28, 28))

    assert out.shape == (2, NUM_CLASSES)
    assert resnet50.conv1.in_channels == 1
    assert flops_per_image(resnet50) == pytest.approx(156e6, rel=0.01)
    assert 23_000_000 < count_parameters(resnet50) < 24_000_000


def test_flops_counting_restores_training_mode():
    model = create_model("vgg-small", width=8)

    model.train()
    train_flops = flops_per_image(model)
    assert model.training
    model.eval()
    assert flops_per_image(model) == train_flops
    assert not model.training


def test_vgg_small_cost_and_output():
    model = create_model("vgg-small")

    assert flops_per_image(model) == pytest.approx(37.4e6, rel=0.01)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, NUM_CLASSES)
    assert model_summary("vgg-small", model) == {
        "model": "vgg-small",
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model),
        "flops": flops_per_image(model),
    }


def test_create_model_passes_classes_and_options():
    model = create_model("vgg-small", num_classes=10, width=8, dropout=0.5)

    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.features[0].out_channels == 8
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]


def test_models_are_seeded_by_torch():
    torch.manual_seed(1)
    a = create_model("lenet5").state_dict()
    torch.manual_seed(1)
    b = create_model("lenet5").state_dict()

    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="choose one of lenet5, mobilenetv2-finetune"):
        create_model("alexnet")


SELF_DESIGNED = ["vgg-8", "vgg-32", "resnet-small-8", "resnet-small-32", "sepnet-8", "sepnet-32"]


@pytest.mark.parametrize("name", SELF_DESIGNED)
def test_self_designed_candidates_take_characters_and_give_47_logits(name):
    model = create_model(name).eval()

    with torch.no_grad():
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, NUM_CLASSES)


def test_candidate_widths_span_two_orders_of_magnitude_in_flops():
    flops = {name: flops_per_image(create_model(name)) for name in SELF_DESIGNED}

    for family in ("vgg", "resnet-small", "sepnet"):
        narrow, wide = (flops[n] for n in SELF_DESIGNED if n.startswith(family))
        assert wide > 3 * narrow
    assert max(flops.values()) / min(flops.values()) > 90


def test_resnet_small_keeps_seven_by_seven_before_pooling():
    model = create_model("resnet-small-8").eval()
    x = torch.rand(1, 1, 28, 28)
    for layer in model.features[:-2]:
        x = layer(x)

    assert tuple(x.shape[1:]) == (32, 7, 7)


def test_size_on_disk_is_four_bytes_a_parameter_plus_overhead():
    model = create_model("vgg-32")
    size = size_on_disk(model)
    floats = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())

    assert 4 * floats < size < 4 * floats + 50_000


def test_trainable_only_counts_what_trains():
    model = create_model("lenet5")
    model.features.requires_grad_(False)

    assert count_parameters(model) == 64_851
    assert count_parameters(model, trainable_only=True) == 120 * 84 + 84 + 84 * 47 + 47
