"""Model specs: the zoo, torchvision, user factories and weight files."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tierflow.errors import ModelSpecError
from tierflow.models import ZOO, resolve_model, zoo_names


def test_every_zoo_model_runs_on_its_example_inputs_in_eval_mode(zoo_model):
    # Arrange: the fixture resolved the model.
    # Act
    with torch.no_grad():
        logits = zoo_model.model(*zoo_model.inputs)

    # Assert
    assert not zoo_model.model.training
    assert logits.shape == (1, 10)


def test_zoo_names_list_every_zoo_entry_sorted():
    assert zoo_names() == tuple(sorted(ZOO))
    assert set(zoo_names()) >= {"lenet", "resnet_mini", "inception_mini", "gru", "lstm"}


def test_the_same_seed_gives_the_same_weights_and_inputs():
    model_a, inputs_a = resolve_model("zoo:resnet_mini", seed=3)
    model_b, inputs_b = resolve_model("zoo:resnet_mini", seed=3)

    torch.testing.assert_close(model_a.state_dict(), model_b.state_dict())
    torch.testing.assert_close(inputs_a, inputs_b)


def test_different_seeds_give_different_weights():
    model_a, _ = resolve_model("zoo:lenet", seed=0)
    model_b, _ = resolve_model("zoo:lenet", seed=1)

    assert not torch.equal(
        model_a.state_dict()["conv1.weight"], model_b.state_dict()["conv1.weight"]
    )


def test_resolving_a_model_leaves_the_global_rng_untouched():
    before = torch.random.get_rng_state()

    resolve_model("zoo:transformer", seed=7)

    assert torch.equal(torch.random.get_rng_state(), before)


def test_input_shape_replaces_the_first_input_and_keeps_its_dtype():
    _, inputs = resolve_model("zoo:gru", input_shape=(2, 5, 8))

    assert inputs[0].shape == (2, 5, 8)
    assert inputs[0].dtype == torch.float32


def test_a_non_positive_input_shape_is_rejected():
    with pytest.raises(ModelSpecError, match="input shape"):
        resolve_model("zoo:lenet", input_shape=(1, 0, 28, 28))


def test_a_torchvision_model_resolves_randomly_initialised_in_eval_mode():
    model, inputs = resolve_model("torchvision:resnet18")

    assert type(model).__name__ == "ResNet"
    assert not model.training
    assert inputs[0].shape == (1, 3, 224, 224)


@pytest.mark.slow
def test_googlenet_returns_a_plain_tensor_in_eval_mode():
    model, _ = resolve_model("torchvision:googlenet")

    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))

    assert isinstance(logits, torch.Tensor)


@pytest.mark.slow
def test_inception_v3_gets_a_299_pixel_default_input():
    _, inputs = resolve_model("torchvision:inception_v3")

    assert inputs[0].shape == (1, 3, 299, 299)


def test_an_unknown_torchvision_name_lists_the_valid_names():
    with pytest.raises(ModelSpecError, match=r"no classification model 'resnet19'.*resnet18"):
        resolve_model("torchvision:resnet19")


def test_an_unknown_zoo_name_lists_the_zoo():
    with pytest.raises(ModelSpecError, match=r"no zoo model 'nope'.*lenet"):
        resolve_model("zoo:nope")


def test_a_spec_without_a_colon_explains_the_three_forms():
    with pytest.raises(ModelSpecError, match="torchvision:NAME"):
        resolve_model("resnet18")


def test_a_factory_in_a_missing_module_is_a_spec_error():
    with pytest.raises(ModelSpecError, match=r"cannot import module 'no_such_pkg\.models'"):
        resolve_model("no_such_pkg.models:build")


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A user module on sys.path with three factories; returns its import name."""
    name = f"user_models_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def with_inputs():
                return nn.Linear(4, 2), torch.ones(3, 4)

            def module_only():
                return nn.Linear(4, 2)

            def not_a_module():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_factory_returning_a_module_and_a_tensor_resolves(factory_module):
    model, inputs = resolve_model(f"{factory_module}:with_inputs")

    assert isinstance(model, torch.nn.Linear)
    assert len(inputs) == 1
    assert inputs[0].shape == (3, 4)


def test_a_factory_without_inputs_gets_a_float_input_of_input_shape(factory_module):
    _, inputs = resolve_model(f"{factory_module}:module_only", input_shape=(5, 4))

    assert inputs[0].shape == (5, 4)
    assert inputs[0].dtype == torch.float32


def test_a_missing_factory_function_is_a_spec_error(factory_module):
    with pytest.raises(ModelSpecError, match="has no callable 'missing'"):
        resolve_model(f"{factory_module}:missing")


def test_a_factory_that_returns_no_module_is_a_spec_error(factory_module):
    with pytest.raises(ModelSpecError, match=r"returned int, not an nn\.Module"):
        resolve_model(f"{factory_module}:not_a_module")


def _save_lenet_weights(path: Path, seed: int) -> dict[str, torch.Tensor]:
    model, _ = resolve_model("zoo:lenet", seed=seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return state


def test_a_weights_file_is_loaded_into_the_model(tmp_path):
    weights = tmp_path / "lenet.safetensors"
    saved = _save_lenet_weights(weights, seed=5)

    model, _ = resolve_model("zoo:lenet", weights=weights, seed=0)

    torch.testing.assert_close(model.state_dict(), saved)


def test_a_matching_sha256_file_is_accepted(tmp_path):
    weights = tmp_path / "lenet.safetensors"
    _save_lenet_weights(weights, seed=5)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (tmp_path / "lenet.safetensors.sha256").write_text(f"{digest}  lenet.safetensors\n")

    model, _ = resolve_model("zoo:lenet", weights=weights)

    assert not model.training


def test_a_sha256_mismatch_is_refused_before_loading(tmp_path):
    weights = tmp_path / "lenet.safetensors"
    _save_lenet_weights(weights, seed=5)
    (tmp_path / "lenet.safetensors.sha256").write_text("0" * 64 + "\n")

    with pytest.raises(ModelSpecError, match=r"lenet\.safetensors has sha256"):
        resolve_model("zoo:lenet", weights=weights)


def test_a_weights_file_with_wrong_keys_names_the_missing_and_unexpected_keys(tmp_path):
    weights = tmp_path / "other.safetensors"
    save_file({"bogus.weight": torch.zeros(2)}, str(weights))

    with pytest.raises(ModelSpecError, match=r"other\.safetensors.*conv1\.weight.*bogus\.weight"):
        resolve_model("zoo:lenet", weights=weights)


def test_a_missing_weights_file_is_a_spec_error(tmp_path):
    with pytest.raises(ModelSpecError, match="does not exist"):
        resolve_model("zoo:lenet", weights=tmp_path / "absent.safetensors")
