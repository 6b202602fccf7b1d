"""The library's messages name its parameters; the command line shows its options instead."""

from __future__ import annotations

import pytest

from wcx.cli import cli_message


@pytest.mark.parametrize(
    "library, cli",
    [
        ("batch_size must be >= 1, got 0", "--batch-size must be >= 1, got 0"),
        ("opt_batch (8) must not exceed max_batch (4)", "--opt-batch (8) must not exceed --max-batch (4)"),
        ("precision int8 needs calib_data (held-out inputs)", "--precision int8 needs --calib-data (held-out inputs)"),
        ("b already exists (pass overwrite=True to replace it)", "b already exists (pass --overwrite to replace it)"),
        ("names: 2 names for 1 models", "--names: 2 names for 1 models"),
        ("holdout_fraction must be in (0, 1), got 2", "--holdout must be in (0, 1), got 2"),
        # name=value (single words too), and name=False as the --no- form of a boolean option
        ("try int8_calibration=entropy, int8_reduce_range=False, or precision=fp16",
         "try --int8-calibration entropy, --no-int8-reduce-range, or --precision fp16"),
        ("(int8_reduce_range=True; max_calib_samples=5000)", "(--int8-reduce-range; --int8-calib-samples 5000)"),
        # single words only at the start; names inside paths and other words stay
        ("member 'm0' has unknown precision 'fp8'", "member 'm0' has unknown precision 'fp8'"),
        ("/data/my_batch_size/x.npz: no such data file", "/data/my_batch_size/x.npz: no such data file"),
    ],
)
def test_parameter_names_become_options(library: str, cli: str) -> None:
    assert cli_message(library) == cli
