"""Hand-edited plans are validated on load: types, ranges and required tables, with the offending key named."""

from __future__ import annotations

import pytest
import tomli_w
from dp_helpers import KEY, standard_inputs
from typer.testing import CliRunner

from consortium.plan import Plan
from data_prep.cli import app
from data_prep.config import PrepConfig
from data_prep.errors import InputError

DELETE = object()

#: (dotted key, value written into a complete plan, what the message must say)
BAD = [
    ("standardization.max_heavy_atoms", 0, r"standardization\.max_heavy_atoms must be >= 1, got 0"),
    ("standardization.max_tautomers", -5, r"standardization\.max_tautomers must be >= 1"),
    ("tasks.credibility.OTHER", [12.0, 3.0], r"tasks\.credibility\.OTHER must be \[min, max\] with finite min < max"),
    ("tasks.credibility.OTHER", [3.0], r"tasks\.credibility\.OTHER must be \[min, max\]"),
    ("tasks.credibility.OTHER", [3, 12], r"tasks\.credibility must be a table of lists of numbers with a decimal"),
    ("tasks.credibility.BIOLOGY", [3.0, 12.0], r"tasks\.credibility has unknown assay type\(s\) \['BIOLOGY'\]"),
    ("fingerprint.binary", "yes", r"fingerprint\.binary must be true or false, got 'yes'"),
    ("fingerprint.radius", 2.5, r"fingerprint\.radius must be an integer, got 2\.5"),
    ("fingerprint.radius", 9, r"fingerprint\.radius must be 1\.\.6"),
    ("fingerprint.size", True, r"fingerprint\.size must be an integer, got True"),
    ("fingerprint", DELETE, r"incomplete: table \[fingerprint\] is missing.*consortium init"),
    ("tasks", DELETE, r"table \[tasks\] is missing"),
    ("standardization", "strict", r"\[standardization\] must be a table"),
    ("tasks.min_train_actives", -1, r"tasks\.min_train_actives must be >= 0, got -1"),
    ("tasks.min_regression_values", -10, r"tasks\.min_regression_values must be >= 0"),
    ("tasks.censored_weight", -0.5, r"tasks\.censored_weight must be >= 0"),
    ("tasks.auto_thresholds", [], r"tasks\.auto_thresholds must be a non-empty list"),
    ("tasks.auto_thresholds", [6.0, "7"], r"tasks\.auto_thresholds must be a list of numbers"),
    ("folds.method", "murcko", r"folds\.method 'murcko' is not supported"),
    ("folds.n_folds", 1, r"folds\.n_folds must be 2\.\.100"),
    ("training.learning_rate", 0.0, r"training\.learning_rate must be > 0"),
    ("training.learning_rate", 1, r"training\.learning_rate must be a number with a decimal point"),
    ("training.min_batch_size", 5000, r"training\.min_batch_size must be >= 1 and <= training\.max_batch_size"),
    ("training.patience", 0, r"training\.max_epochs and training\.patience must be >= 1"),
    ("trunk.hidden_sizes", [0], r"trunk\.hidden_sizes must be positive integers"),
    ("trunk.hidden_sizes", "2000", r"trunk\.hidden_sizes must be a list of integers"),
    ("federation.rounds", 0, r"federation\.rounds and federation\.min_partners must be >= 1"),
    ("federation.local_steps", 0, r"federation\.local_steps and federation\.local_epochs must be >= 1"),
    ("federation.secagg_clipping_range", -8.0, r"federation\.secagg_clipping_range must be > 0"),
    ("federation.secure_aggregation", "on", r"federation\.secure_aggregation must be true or false"),
    ("federation.server_lr", 0.0, r"federation\.server_lr must be a number in \(0, 10\]"),
]


def write_plan(path, dotted: str, value) -> None:
    raw = Plan().to_dict()
    *parents, last = dotted.split(".")
    table = raw
    for name in parents:
        table = table[name]
    if value is DELETE:
        del table[last]
    else:
        table[last] = value
    path.write_text(tomli_w.dumps(raw))


@pytest.mark.parametrize("dotted, value, message", BAD, ids=[f"{d}={v!r}"[:40] for d, v, _ in BAD])
def test_bad_plan_value_is_refused_on_load_naming_file_and_key(tmp_path, dotted, value, message):
    path = tmp_path / "plan.toml"
    write_plan(path, dotted, value)
    with pytest.raises(InputError, match=message) as info:
        Plan.load(path)
    assert str(info.value).startswith(f"{path}: ")
    if dotted.split(".")[0] in ("fingerprint", "standardization", "folds", "tasks"):
        with pytest.raises(InputError, match=message):  # data_prep reads the same plan alone
            PrepConfig.from_file(path)


def test_the_default_plan_and_a_plan_written_by_init_load(tmp_path):
    Plan().save(tmp_path / "plan.toml")
    assert Plan.load(tmp_path / "plan.toml").to_dict() == Plan().to_dict()
    assert PrepConfig.from_file(tmp_path / "plan.toml").to_dict() == PrepConfig().to_dict()


@pytest.mark.parametrize("dotted, value, message", [
    ("fingerprint.radius", 2.5, "fingerprint.radius must be an integer"),  # was a Boost.Python.ArgumentError
    ("standardization.max_heavy_atoms", 0, "max_heavy_atoms must be >= 1"),  # was accepted: every row rejected
    ("tasks.credibility.OTHER", [12.0, 3.0], "tasks.credibility.OTHER must be"),  # was accepted: all dropped
])
def test_prepare_with_a_bad_plan_is_one_error_line_and_exit_2(tmp_path, dotted, value, message):
    write_plan(tmp_path / "plan.toml", dotted, value)
    (tmp_path / "secret.key").write_text(KEY.hex())
    standard_inputs(tmp_path / "in")
    result = CliRunner().invoke(app, ["prepare", "--plan", str(tmp_path / "plan.toml"), "--key",
                                      str(tmp_path / "secret.key"), "--input", str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out"), "--no-cache", "-j", "1"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_binary_plan_and_key_files_are_clear_errors_not_unicode_tracebacks(tmp_path):
    binary = bytes(range(256)) * 4
    (tmp_path / "plan.toml").write_bytes(binary)
    with pytest.raises(InputError, match="plan.toml is not UTF-8 text"):
        Plan.load(tmp_path / "plan.toml")
    Plan().save(tmp_path / "good.toml")
    (tmp_path / "secret.key").write_bytes(binary)
    (tmp_path / "in").mkdir()
    for plan, message in (("plan.toml", "is not UTF-8 text"), ("good.toml", "secret.key is not hex text")):
        result = CliRunner().invoke(app, ["reference-hash", "--plan", str(tmp_path / plan), "--key",
                                          str(tmp_path / "secret.key")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
