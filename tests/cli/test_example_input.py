"""``stardomain spec --example-input``: a model that takes token ids is traced on a batch of ids, not on random floats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from cli_helpers import assert_one_line_error, run_cli
from safetensors.torch import save_file


def test_a_token_model_traces_on_its_own_ids_and_refuses_floats_in_one_line(tmp_path: Path, capsys) -> None:
    target = ["--plugin", "own_models", "spec", "own_models:build_tokens", "--in-shape", "6"]
    r = run_cli(capsys, *target)
    assert_one_line_error(r, "dtype")  # random floats into nn.Embedding: the message names the dtype
    ids = np.random.default_rng(0).integers(0, 17, size=(4, 6))
    np.save(tmp_path / "ids.npy", ids)
    r = run_cli(capsys, *target, "--example-input", tmp_path / "ids.npy")
    assert r.code == 0, r.err
    assert "function kept" in r.out and "emb.weight" in r.out
    save_file({"ids": torch.from_numpy(ids)}, str(tmp_path / "ids.safetensors"))
    assert run_cli(capsys, *target, "--example-input", tmp_path / "ids.safetensors").code == 0


def test_a_bad_example_input_is_one_line(tmp_path: Path, capsys) -> None:
    target = ["--plugin", "own_models", "spec", "own_models:build_tokens", "--in-shape", "6", "--example-input"]
    assert_one_line_error(run_cli(capsys, *target, tmp_path / "missing.npy"), "no such file")
    (tmp_path / "x.txt").write_text("1 2 3")
    assert_one_line_error(run_cli(capsys, *target, tmp_path / "x.txt"), "unknown format")
    save_file({"a": torch.zeros(2, 6, dtype=torch.long), "b": torch.zeros(1)}, str(tmp_path / "two.safetensors"))
    assert_one_line_error(run_cli(capsys, *target, tmp_path / "two.safetensors"), "holds 2 tensors")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert_one_line_error(run_cli(capsys, *target, tmp_path / "bad.npy"), "cannot be read")
