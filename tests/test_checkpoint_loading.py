"""Loading a local safetensors checkpoint that the test writes itself, and its bad-input errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from fluid.errors import InputError  # noqa: E402
from runtime.gpu.checkpoint import build_random_model, load_checkpoint_model  # noqa: E402
from runtime.gpu.setup import model_config  # noqa: E402
from runtime.gpu.model_presets import resolve_model_config  # noqa: E402
from validation.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ckpt")
    model = build_random_model(resolve_model_config("tiny-llama"), dtype=torch.float32, device="cpu", seed=11)
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def _copy(src, dst, skip=()):
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_loaded_weights_equal_saved(saved):
    folder, model = saved
    loaded = load_checkpoint_model(folder, dtype=torch.float32, device="cpu")
    ids = torch.randint(0, 256, (1, 17))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_missing_weights_file(saved, tmp_path):
    broken = _copy(saved[0], tmp_path / "b", skip={"model.safetensors"})
    with pytest.raises(InputError, match="no model.safetensors"):
        load_checkpoint_model(broken, dtype=torch.float32, device="cpu")


def test_missing_config(saved, tmp_path):
    broken = _copy(saved[0], tmp_path / "b", skip={"config.json"})
    with pytest.raises(InputError, match="no config.json"):
        model_config(None, str(broken))


def test_config_disagrees_with_tensors(saved, tmp_path):
    broken = _copy(saved[0], tmp_path / "b")
    cfg = json.loads((broken / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="shape"):
        load_checkpoint_model(broken, dtype=torch.float32, device="cpu")


def test_checkpoint_disagrees_with_model_flag(saved):
    with pytest.raises(InputError, match="hidden_size"):
        model_config("llama-2-7b", str(saved[0]))


def test_cli_exits_2_before_any_work(saved, tmp_path, capsys):
    broken = _copy(saved[0], tmp_path / "b", skip={"model.safetensors"})
    wl = tmp_path / "wl.yaml"
    wl.write_text("name: t\nkv_capacity_tokens: 1024\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 0.00001}\ntypes:\n  - {name: a, prefill: 12, decode: 3, rate_per_s: 4}\n")
    code = main(["run", str(wl), "--scheduler", "sarathi", "--checkpoint", str(broken), "--device", "cpu", "--requests", "2"])
    assert code == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_model_config_json_path(saved):
    cfg = model_config(str(saved[0] / "config.json"), None)
    assert cfg.hidden_size == 64 and cfg.num_key_value_heads == 2


def _tiny_workload(tmp_path):
    wl = tmp_path / "wl.yaml"
    wl.write_text("name: t\nkv_capacity_tokens: 1024\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 0.00001}\n"
                  "types:\n  - {name: a, prefill: 12, decode: 3, rate_per_s: 400}\n")
    return wl


def test_model_folder_runs_its_own_weights(saved, tmp_path, capsys):
    """--model FOLDER of a Hugging Face checkpoint: config and weights both come from the folder."""
    from runtime.gpu.setup import model_and_checkpoint

    folder, _ = saved
    assert model_and_checkpoint(str(folder), None) == (None, str(folder))
    out = tmp_path / "run"
    assert main(["run", str(_tiny_workload(tmp_path)), "--scheduler", "fcfs", "--model", str(folder), "--device", "cpu",
                 "--requests", "3", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["checkpoint"] == str(folder) and config["model"]["hidden_size"] == 64
    assert json.loads((out / "summary.json").read_text())["model"] == str(folder)


def test_model_folder_with_only_config_uses_random_weights(saved, tmp_path):
    from runtime.gpu.setup import model_and_checkpoint

    shape_only = _copy(saved[0], tmp_path / "shape", skip={"model.safetensors"})
    assert model_and_checkpoint(str(shape_only), None) == (str(shape_only / "config.json"), None)


def test_model_folder_errors(saved, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    wl = str(_tiny_workload(tmp_path))
    assert main(["run", wl, "--scheduler", "fcfs", "--model", str(empty), "--device", "cpu", "--requests", "2"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    other = _copy(saved[0], tmp_path / "other")
    assert main(["run", wl, "--scheduler", "fcfs", "--model", str(saved[0]), "--checkpoint", str(other),
                 "--device", "cpu", "--requests", "2"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_host_memory_check_counts_the_real_weights(monkeypatch):
    """parameter_count equals the built model's, and the check refuses exactly past 90 % of MemAvailable."""
    import runtime.gpu.setup as setup

    cfg = resolve_model_config("tiny-llama")
    model = build_random_model(cfg, dtype=torch.float32, device="cpu")
    assert setup.parameter_count(cfg) == sum(p.numel() for p in model.parameters())
    need = setup.parameter_count(cfg) * 4 + 1000 * setup.kv_bytes_per_token(cfg, torch.float32)
    monkeypatch.setattr(setup, "available_host_bytes", lambda: need / setup.HOST_MEMORY_SHARE)
    setup.check_host_memory(cfg, torch.float32, 1000, model_name="tiny-llama")  # exactly the budget: fits
    with pytest.raises(InputError, match=r"tiny-llama in float32 with a KV pool of 1001 tokens needs .* GiB of host memory"):
        setup.check_host_memory(cfg, torch.float32, 1001, model_name="tiny-llama")
