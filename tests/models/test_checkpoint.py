"""lipcert.models.save / load / read_spec: exact round trips and loud failures."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lipcert.errors import CheckpointError
from lipcert.models import RECIPES, build, load, read_spec, save, spec_path

# Small inputs keep every recipe cheap; 8x8 single-channel images like the "digits" data set.
SMALL = {"in_channels": 1, "image_size": 8, "num_classes": 10}


def trained(name: str, dtype: torch.dtype = torch.float32, **args) -> nn.Module:
    """A recipe model moved away from its initialization: two SGD steps in training mode (which
    also advances any power-iteration buffers), then eval mode."""
    torch.manual_seed(0)
    model = build(name, **{**SMALL, **args}).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.rand(16, 1, 8, 8, dtype=dtype)
    y = torch.arange(16) % 10
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained lmt-mnist checkpoint, read-only for the tests that corrupt copies of it."""
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    model = trained("lmt-mnist")
    save(model, path, dataset="digits", normalization={"mean": [0.5], "std": [0.25]},
         extra={"epoch": 3})
    return path, model


def copy_checkpoint(saved, tmp_path):
    path, _ = saved
    target = tmp_path / "copy.safetensors"
    target.write_bytes(path.read_bytes())
    spec_path(target).write_bytes(spec_path(path).read_bytes())
    return target


def rewrite_weights(path, change, *, update_spec: bool) -> None:
    """Replace the weights file with ``change(tensors)``; optionally make the spec agree."""
    with safetensors.safe_open(path, "pt") as handle:  # keeps the recipe recorded inside
        metadata = handle.metadata()
    tensors = change(safetensors.torch.load(path.read_bytes()))
    data = safetensors.torch.save(tensors, metadata=metadata)
    path.write_bytes(data)
    if update_spec:
        import hashlib

        spec = json.loads(spec_path(path).read_text())
        spec["weights"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        spec["tensors"] = {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in tensors.items()
        }
        spec_path(path).write_text(json.dumps(spec))


def edit_spec(path, change) -> None:
    spec = json.loads(spec_path(path).read_text())
    change(spec)
    spec_path(path).write_text(json.dumps(spec))


@pytest.mark.parametrize("name", RECIPES)
def test_round_trip_gives_identical_outputs(name, tmp_path):
    model = trained(name)
    path = tmp_path / f"{name}.safetensors"
    save(model, path)
    loaded = load(path)
    assert not loaded.training
    assert loaded.lipcert_spec == model.lipcert_spec
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for (key, a), (key_b, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                    strict=True):
        assert key == key_b and a.dtype == b.dtype and torch.equal(a, b), key


@pytest.mark.parametrize("name", RECIPES)
def test_round_trip_in_float64(name, tmp_path):
    model = trained(name, torch.float64)
    path = tmp_path / "model.safetensors"
    save(model, path)
    assert read_spec(path)["dtype"] == "float64"
    loaded = load(path)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_spec_records_recipe_data_and_hash(saved):
    path, model = saved
    spec = read_spec(path)
    assert spec == read_spec(spec_path(path))
    assert spec["recipe"] == "lmt-mnist" and spec["args"] == model.lipcert_spec["args"]
    assert spec["dataset"] == "digits"
    assert spec["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert spec["extra"] == {"epoch": 3}
    assert spec["lipcert_version"]
    assert spec["weights"]["bytes"] == path.stat().st_size
    assert set(spec["tensors"]) == set(model.state_dict())
    assert spec["tensors"]["0.weight"] == {"shape": [16, 1, 4, 4], "dtype": "float32"}


def test_load_places_model_on_map_location(saved):
    loaded = load(saved[0], map_location="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_to_cuda_and_save_from_cuda(saved, tmp_path):
    loaded = load(saved[0], map_location="cuda")
    assert all(p.is_cuda for p in loaded.parameters())
    save(loaded, tmp_path / "again.safetensors")
    assert torch.equal(load(tmp_path / "again.safetensors").state_dict()["0.weight"],
                       saved[1].state_dict()["0.weight"])


def test_load_never_unpickles(saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    load(saved[0])


def test_save_is_atomic_and_leaves_no_temporary_files(saved, tmp_path):
    _, model = saved
    path = tmp_path / "out" / "model.safetensors"
    save(model, path)
    save(model, path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]
    with pytest.raises(ValueError, match="extra"):
        save(model, tmp_path / "bad.safetensors", extra={"loss": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_truncated_weights_are_reported(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load(path)


def test_appended_bytes_are_reported(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="weights.bytes"):
        load(path)


def test_flipped_byte_fails_the_hash(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load(path)


def test_corrupted_header_is_reported(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    data = bytearray(path.read_bytes())
    data[0:8] = (2**40).to_bytes(8, "little")  # header length beyond the file
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load(path)


@pytest.mark.parametrize("update_spec", [False, True])
def test_missing_tensor_is_named(saved, tmp_path, update_spec):
    path = copy_checkpoint(saved, tmp_path)
    rewrite_weights(path, lambda t: {k: v for k, v in t.items() if k != "2.bias"},
                    update_spec=update_spec)
    with pytest.raises(CheckpointError, match=r"'2\.bias' is missing"):
        load(path)


@pytest.mark.parametrize("update_spec", [False, True])
def test_wrong_dtype_is_named(saved, tmp_path, update_spec):
    path = copy_checkpoint(saved, tmp_path)
    rewrite_weights(path, lambda t: {**t, "0.weight": t["0.weight"].double()},
                    update_spec=update_spec)
    with pytest.raises(CheckpointError, match=r"'0\.weight' has dtype float64"):
        load(path)


@pytest.mark.parametrize("update_spec", [False, True])
def test_wrong_shape_is_named(saved, tmp_path, update_spec):
    path = copy_checkpoint(saved, tmp_path)
    rewrite_weights(path, lambda t: {**t, "0.bias": torch.zeros(17)}, update_spec=update_spec)
    with pytest.raises(CheckpointError, match=r"'0\.bias' has shape \[17\]"):
        load(path)


def test_unexpected_tensor_is_named(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    rewrite_weights(path, lambda t: {**t, "intruder": torch.zeros(1)}, update_spec=True)
    with pytest.raises(CheckpointError, match="'intruder'"):
        load(path)


def test_nan_weights_are_refused(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    rewrite_weights(path, lambda t: {**t, "0.bias": torch.full((16,), float("nan"))},
                    update_spec=True)
    with pytest.raises(CheckpointError, match=r"'0\.bias'.*NaN"):
        load(path)


def test_bad_json_is_reported(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    spec_path(path).write_text('{"format": "lipcert-checkpoint",')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(path)


@pytest.mark.parametrize("field", ["recipe", "args", "dtype", "weights", "tensors"])
def test_missing_spec_field_is_named(saved, tmp_path, field):
    path = copy_checkpoint(saved, tmp_path)
    edit_spec(path, lambda spec: spec.pop(field))
    with pytest.raises(CheckpointError, match=f"'{field}'"):
        load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(recipe="resnet-9000"), "unknown model recipe 'resnet-9000'"),
        (lambda s: s["args"].update(width=32), r"'0\.weight' has shape"),
        (lambda s: s["args"].update(colour=1), "does not take colour"),
        (lambda s: s.update(dtype="float99"), "float99"),
        (lambda s: s.update(format_version=99), "upgrade lipcert"),
        (lambda s: s.update(format="zip"), "'format'"),
        (lambda s: s["tensors"].update({"0.bias": {"shape": "16"}}), r"'0\.bias'.*'tensors'"),
    ],
)
def test_wrong_spec_values_are_named(saved, tmp_path, change, message):
    path = copy_checkpoint(saved, tmp_path)
    edit_spec(path, change)
    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_missing_files_are_reported(saved, tmp_path):
    path = copy_checkpoint(saved, tmp_path)
    path.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nothing.safetensors")


def test_only_recipe_models_can_be_saved(saved, tmp_path):
    with pytest.raises(CheckpointError, match="only models built by lipcert.models.build"):
        save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "plain.safetensors")
    changed = build("lmt-mnist", **SMALL)
    changed.append(nn.Linear(10, 10))  # keeps lipcert_spec, no longer matches the recipe
    with pytest.raises(CheckpointError, match="no longer|does not have"):
        save(changed, tmp_path / "changed.safetensors")
    mixed = build("lmt-mnist", **SMALL)
    mixed[0].double()
    with pytest.raises(CheckpointError, match="mixes floating-point dtypes"):
        save(mixed, tmp_path / "mixed.safetensors")
    broken = build("lmt-mnist", **SMALL)
    with torch.no_grad():
        broken[0].bias[0] = float("inf")
    with pytest.raises(CheckpointError, match=r"'0\.bias'.*NaN or Inf"):
        save(broken, tmp_path / "broken.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_vanilla_export_cannot_pass_for_its_recipe(tmp_path):
    from lipcert.layers import to_vanilla

    model = build("sll-s", seed=0, **SMALL).eval()
    vanilla = to_vanilla(model, (1, 1, 8, 8))
    with pytest.raises(CheckpointError, match="changed after build"):
        save(vanilla, tmp_path / "vanilla.safetensors")


def test_path_must_name_the_safetensors_file(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"must end in \.safetensors"):
        save(saved[1], tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"must end in \.safetensors"):
        load(spec_path(saved[0]))


def test_save_and_load_leave_the_global_generator_alone(saved, tmp_path):
    state = torch.random.get_rng_state()
    save(saved[1], tmp_path / "model.safetensors")
    load(tmp_path / "model.safetensors")
    assert torch.equal(torch.random.get_rng_state(), state)


# --- issue #13 item 16: the recipe is bound to the weights; malformed specs; sizes first ---

TINY = {**SMALL, "width": 4, "dense_width": 8}


def tiny_checkpoint(tmp_path, name: str) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save(build(name, seed=0, **TINY), path)
    return path


def real_bytes_during(function) -> int:
    """Bytes of every non-meta tensor produced by an aten op while ``function`` runs (views
    counted too: an upper measure of what torch allocated)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in torch.utils._pytree.tree_leaves(out):
                if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                    Count.total += tensor.numel() * tensor.element_size()
            return out

    with Count():
        function()
    return Count.total


def test_swapping_the_recipe_name_is_refused(tmp_path):
    # aol-s and spectral-s have identical tensor tables: only the binding tells them apart
    path = tiny_checkpoint(tmp_path, "aol-s")
    other = read_spec(tiny_checkpoint(tmp_path, "spectral-s"))
    assert other["tensors"] == read_spec(path)["tensors"]
    edit_spec(path, lambda spec: spec.update(recipe="spectral-s"))
    with pytest.raises(CheckpointError, match="saved for recipe 'aol-s'.*says 'spectral-s'"):
        load(path)


def test_an_argument_that_keeps_every_shape_is_still_bound(tmp_path):
    # some recipes' tensors do not depend on image_size: only the binding catches an edit
    for name in RECIPES:
        base = build(name, seed=0, **SMALL).state_dict()
        other = build(name, seed=0, **{**SMALL, "image_size": 12}).state_dict()
        if {k: v.shape for k, v in base.items()} == {k: v.shape for k, v in other.items()}:
            break
    else:
        pytest.skip("every recipe's tensors depend on image_size")
    path = tmp_path / "model.safetensors"
    save(build(name, seed=0, **SMALL), path)
    edit_spec(path, lambda spec: spec["args"].update(image_size=12))
    with pytest.raises(CheckpointError, match="was saved for"):
        load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["args"].update(seed=3), "'seed' is not a recipe argument"),
        (lambda s: s.update(dtype="uint8"), "'dtype'.*'uint8'"),
        (lambda s: s.update(dtype="int64"), "'dtype'.*'int64'"),
        (lambda s: s["args"].pop("width"), r"lacks \['width'\]"),
        (lambda s: s["args"].update(width=True), "positive integer"),
        (lambda s: s["args"].update(width=4.0), "positive integer"),
        (lambda s: s["args"].update(width=10**40), "too large"),
        (lambda s: s.update(surprise=1), "unknown field"),
        (lambda s: s["weights"].update(extra=1), "'weights'"),
        (lambda s: s["weights"].update(bytes=True), "'weights'"),
        (lambda s: s["weights"].update(sha256="zz"), "'weights'"),
        (lambda s: s["tensors"]["0.bias"].update(note=1), r"'0\.bias'"),
        (lambda s: s["tensors"]["0.bias"].update(shape=[True]), r"'0\.bias'"),
        (lambda s: s["tensors"]["0.bias"].update(dtype="complex7"), r"'0\.bias'"),
        (lambda s: s.update(format_version=0), "format_version"),
        (lambda s: s.update(format_version=True), "'format_version'"),
        (lambda s: s.update(recipe=["lmt-mnist"]), "'recipe'"),
    ],
)
def test_every_malformed_spec_is_a_checkpoint_error(saved, tmp_path, change, message):
    path = copy_checkpoint(saved, tmp_path)
    edit_spec(path, change)
    with pytest.raises(CheckpointError, match=message):
        load(path)


@pytest.mark.parametrize("text", ['{"format": NaN}', '{"a": Infinity}', "[" * 100_000,
                                  "\udcff"], ids=["nan", "infinity", "deep", "not-utf8"])
def test_non_json_specs_are_checkpoint_errors(saved, tmp_path, text):
    path = copy_checkpoint(saved, tmp_path)
    spec_path(path).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError):
        load(path)


def test_an_oversized_spec_is_refused_before_parsing(saved, tmp_path, monkeypatch):
    from lipcert.models import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_SPEC_BYTES", 1000)
    path = copy_checkpoint(saved, tmp_path)
    with pytest.raises(CheckpointError, match="larger than 1000 bytes"):
        load(path)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)
# fields whose value does not decide the function the checkpoint computes
_FREE_FIELDS = {"dataset", "normalization", "extra", "lipcert_version", "file"}


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_specs_load_identically_or_raise_checkpoint_errors(saved, tmp_path, data):
    path, model = saved
    spec = json.loads(spec_path(path).read_text())
    where = data.draw(st.sampled_from([p for p in _paths(spec) if p]))
    action = data.draw(st.sampled_from(("replace", "delete", "add")))
    parent = spec
    for key in where[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[where[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=6))] = data.draw(_JSON_VALUES)
    else:
        parent[where[-1]] = data.draw(_JSON_VALUES)
    target = tmp_path / f"fuzz-{data.draw(st.integers(0, 10**9))}.safetensors"
    target.write_bytes(path.read_bytes())
    spec_path(target).write_text(json.dumps(spec))
    try:
        loaded = load(target)
    except CheckpointError:
        return
    assert read_spec(target)["recipe"] == "lmt-mnist"
    assert any(key in _FREE_FIELDS for key in where) or json.loads(
        spec_path(target).read_text()) == json.loads(spec_path(path).read_text())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize("name", ["lmt-mnist", "spectral-s", "sll-s", "aol-s", "cpl-s"])
@pytest.mark.parametrize("dense_width", [10**6, 500])
def test_a_huge_dense_width_fails_before_anything_big_is_built(tmp_path, name, dense_width):
    path = tiny_checkpoint(tmp_path, name)
    assert path.stat().st_size < 5000
    edit_spec(path, lambda spec: spec["args"].update(dense_width=dense_width))
    start = time.perf_counter()
    box = {}

    def attempt():
        with pytest.raises(CheckpointError) as box["error"]:
            load(path)

    allocated = real_bytes_during(attempt)
    assert allocated < 4 * 2**20, f"{allocated / 2**20:.0f} MiB for {box['error'].value}"
    assert time.perf_counter() - start < 10.0


def _as_format_1(path) -> None:
    """Rewrite a checkpoint as today's main wrote it: format_version 1, recipe name only."""
    import hashlib

    tensors = safetensors.torch.load(path.read_bytes())
    with safetensors.safe_open(path, "pt") as handle:
        recipe = handle.metadata()["lipcert_recipe"]
    data = safetensors.torch.save(tensors, metadata={"format": "pt", "lipcert_recipe": recipe})
    path.write_bytes(data)
    edit_spec(path, lambda spec: (spec.update(format_version=1), spec["weights"].update(
        bytes=len(data), sha256=hashlib.sha256(data).hexdigest())))


def test_format_1_checkpoints_still_load_and_keep_their_recipe(tmp_path):
    path = tiny_checkpoint(tmp_path, "aol-s")
    _as_format_1(path)
    loaded = load(path)
    assert loaded.lipcert_spec["recipe"] == "aol-s"
    edit_spec(path, lambda spec: spec.update(recipe="spectral-s"))
    with pytest.raises(CheckpointError, match="saved for recipe 'aol-s'"):
        load(path)


def test_the_weights_record_their_recipe_args_and_dtype(saved):
    with safetensors.safe_open(saved[0], "pt") as handle:
        recorded = json.loads(handle.metadata()["lipcert_spec"])
    spec = read_spec(saved[0])
    assert recorded == {key: spec[key] for key in ("recipe", "args", "dtype")}
    assert spec["format_version"] == 2


def test_recipes_that_cannot_build_on_meta_are_built_under_an_allocation_cap():
    from lipcert.models.checkpoint import _recipe_table

    args = {**TINY, "depth": 2, "dense_depth": 2, "dense_width": 5000}
    with pytest.raises(CheckpointError, match="would allocate 80000 elements"):
        _recipe_table("spectral-s", args, torch.float32, budget=1000)  # .item() during build
    table, _ = _recipe_table("spectral-s", {**args, "dense_width": 8}, torch.float32,
                             budget=10**4)
    model = build("spectral-s", seed=0, **{**args, "dense_width": 8})
    assert table == {k: {"shape": list(v.shape), "dtype": "float32"}
                     for k, v in model.state_dict().items()}


def test_load_takes_a_run_folder_and_checks_the_device_first(tmp_path):
    """#14: load('runs/x') refused the folder the CLI accepts; map_location='cuda'
    without CUDA was a raw AssertionError."""
    from lipcert.errors import BadInputError

    model = build("sll-s", seed=0, image_size=8, width=4, depth=1, dense_width=8,
                         dense_depth=1)
    save(model, tmp_path / "model.safetensors")
    loaded = load(tmp_path)
    assert read_spec(tmp_path)["recipe"] == "sll-s"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="folder without model.safetensors"):
        load(tmp_path / "empty")
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError, match="CUDA is not available"):
            load(tmp_path, map_location="cuda")
    with pytest.raises(BadInputError, match="not a device"):
        load(tmp_path, map_location="gpu")
