"""Fault injection: config values and files that used to pass unnoticed or end in a traceback."""

from __future__ import annotations

import pytest
from conftest import BB_A, bench_cli

from unisurg.evaluation.bench_config import load_bench_config
from unisurg.strict_yaml import safe_load_strict
from unisurg.train.command import main
from unisurg.train.pretrain_config import load_pretrain_config
from unisurg.typed_config import ConfigError


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-inf", ".inf", "-.Inf", "1e999", "1" + "0" * 400])
def test_non_finite_numbers_are_rejected_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"optim\.lr: .* is not a finite number"):
        load_pretrain_config("tiny", [f"optim.lr={value}"])
    with pytest.raises(ConfigError, match=r"is not a finite number"):
        load_bench_config("tiny", [f"clip.fps={value}"])


def test_non_finite_numbers_in_a_yaml_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: tiny\noptim:\n  weight_decay: .nan\n")
    with pytest.raises(ConfigError, match=r"optim\.weight_decay: nan is not a finite number"):
        load_pretrain_config(f)


def test_duplicate_yaml_keys_are_rejected_with_both_lines(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: tiny\noptim:\n  lr: 1.0e-3\n  weight_decay: 0.05\n  lr: 2.0e-3\n")
    with pytest.raises(ConfigError, match=rf"{f}: not valid YAML: duplicate key 'lr' \(first at line 3, again at "
                                          r"line 5\)"):
        load_pretrain_config(f)
    f.write_text("base: tiny\noptim:\n  lr: 1.0e-3\nschedule:\n  epochs: 3\noptim:\n  weight_decay: 0.05\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'optim' \(first at line 2, again at line 6\)"):
        load_pretrain_config(f)
    with pytest.raises(ConfigError, match=r"duplicate key 'a'"):
        load_pretrain_config("tiny", ["data.stores={a: 1, a: 2}"])


def test_yaml_merge_keys_may_still_be_overridden():
    # an anchor + merge whose key is overridden is legitimate YAML, not a duplicate
    assert safe_load_strict("a: &x {lr: 1, wd: 2}\nb:\n  <<: *x\n  lr: 3\n")["b"] == {"lr": 3, "wd": 2}


def test_an_output_folder_that_is_a_file_is_rejected(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    with pytest.raises(ConfigError, match=rf"run\.out={f} is a file, not a folder"):
        load_pretrain_config("tiny", [f"run.out={f}"])
    with pytest.raises(ConfigError, match=rf"run\.out={f / 'run'} lies below {f}, which is a file"):
        load_pretrain_config("tiny", [f"run.out={f / 'run'}"])
    assert load_pretrain_config("tiny", [f"run.out={tmp_path / 'new' / 'run'}"]).run.out  # not there yet: fine


def test_pretrain_cli_reports_run_out_file_without_traceback(tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("x")
    assert main(["--config", "tiny", f"run.out={f}", "data.stores=[/nowhere]"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_bench_out_that_is_a_file_is_one_error(tmp_path, capsys):
    f = tmp_path / "bench-out"
    f.write_text("x")
    assert bench_cli("bench", "--backbone", BB_A, "--dataset", "synthetic", "--root", str(tmp_path),
                     "--out", str(f), "--config", "tiny") == 2
    assert "--out=" in capsys.readouterr().err
