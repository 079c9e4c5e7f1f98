"""`parasal serve` flags: bad ones give one readable line on stderr and exit status 2."""

from pathlib import Path

import pytest

from parasal.server.cli import main
from parasal.server.config import ConfigError, ServerConfig, parse_bundle_arg


def run(capsys, *argv) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit:  # argparse
        code = exit.code
    return code, capsys.readouterr().err


def test_bundle_names():
    assert parse_bundle_arg("/data/fashion-test/") == ("fashion-test", Path("/data/fashion-test/"))
    assert parse_bundle_arg("fm=/data/x") == ("fm", Path("/data/x"))
    with pytest.raises(ConfigError):
        parse_bundle_arg("=/data/x")


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "--bundle"),
        (["--bundle", "B", "--port", "http"], "--port"),
        (["--bundle", "B", "--device", "tpu"], "--device"),
    ],
)
def test_flag_errors_are_one_line(capsys, argv, words):
    code, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and words in err and err.startswith("parasal serve: error:")


def test_unusable_settings_are_one_line(capsys, tmp_path):
    empty = tmp_path / "not-a-bundle"
    empty.mkdir()
    # --port 0: these errors come from opening the bundle, after the port check.
    state = ["--state-dir", str(tmp_path / "state"), "--port", "0"]
    cases = [
        (["--bundle", str(tmp_path / "missing"), *state], "not a directory"),
        (["--bundle", str(empty), *state], "not-a-bundle"),
        (["--bundle", str(empty), "--state-dir", str(empty / "state")], "inside bundle"),
        (["--bundle", f"a={empty}", "--bundle", f"a={empty}", *state], "twice"),
        (["--bundle", str(empty), "--tls-cert", "c.pem", *state], "--tls-key"),
        (["--bundle", str(empty), "--max-operations", "0", *state], "max_operations"),
        (["--bundle", str(empty), "--search-workers", "0", *state], "search_workers"),
        (["--bundle", str(empty), "--sample-cache", "-1", *state], "sample_cache"),
        (["--bundle", str(empty), "--neighbor-lists", "-1", *state], "neighbor_lists"),
        (["--bundle", str(empty), "--neighbor-lists-max-samples", "-5", *state], "neighbor_lists_max_samples"),
    ]
    for argv, words in cases:
        code, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        lines = [line for line in err.splitlines() if line.startswith("parasal serve: error:")]
        assert len(lines) == 1 and words in lines[0], (argv, err)
        assert "Traceback" not in err


def test_token_file_must_be_readable_and_non_empty(tmp_path):
    config = ServerConfig(token_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read token file"):
        config.read_token()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        ServerConfig(token_file=tmp_path / "empty").read_token()
    (tmp_path / "t").write_text("  abc \n")
    assert ServerConfig(token_file=tmp_path / "t").read_token() == "abc"


def test_serving_fast_path_flags_reach_the_config(tmp_path):
    from parasal.server.cli import build_parser, config_from_args

    bundle = tmp_path / "b"
    bundle.mkdir()
    base = ["--bundle", str(bundle), "--state-dir", str(tmp_path / "state")]
    defaults = config_from_args(build_parser().parse_args(base))
    assert (defaults.neighbor_lists, defaults.neighbor_lists_max_samples, defaults.saliency_process) == (
        ServerConfig.neighbor_lists,
        ServerConfig.neighbor_lists_max_samples,
        True,
    )
    config = config_from_args(
        build_parser().parse_args(
            [*base, "--neighbor-lists", "0", "--neighbor-lists-max-samples", "7", "--no-saliency-process"]
        )
    )
    assert (config.neighbor_lists, config.neighbor_lists_max_samples, config.saliency_process) == (0, 7, False)


def test_limits_are_written_once_and_every_module_defaults_to_them():
    import inspect

    from parasal.server import config as limits
    from parasal.server.neighbor_lists import NeighborLists

    defaults = ServerConfig()
    assert defaults.max_message_bytes == limits.MAX_MESSAGE_BYTES == 64 * 1024 * 1024
    assert defaults.neighbor_lists == limits.NEIGHBOR_LIST_SIZE == 64
    assert defaults.neighbor_lists_max_samples == limits.NEIGHBOR_LISTS_MAX_SAMPLES == 50_000
    assert inspect.signature(NeighborLists.build).parameters["size"].default == limits.NEIGHBOR_LIST_SIZE


def test_a_token_file_others_can_read_is_used_with_a_warning(tmp_path, caplog):
    """As ssh does for private keys: the server still starts, but says how to fix it."""
    from parasal.server.config import ServerConfig

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    with caplog.at_level("WARNING", logger="parasal.server"):
        assert ServerConfig(token_file=token).read_token() == "s3cret"
    assert not [r for r in caplog.records if "accessible by others" in r.getMessage()]
    token.chmod(0o644)
    with caplog.at_level("WARNING", logger="parasal.server"):
        assert ServerConfig(token_file=token).read_token() == "s3cret"
    (warning,) = [r.getMessage() for r in caplog.records if "accessible by others" in r.getMessage()]
    assert "0644" in warning and "chmod 600" in warning and "s3cret" not in warning
