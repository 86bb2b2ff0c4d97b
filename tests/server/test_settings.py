"""One settings object from flags, BLOBGATE_* variables and a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from blobgate.server.core.settings import MiB
from blobgate.server.settings_loading import SettingsError, load_settings


def test_defaults() -> None:
    settings, args = load_settings([])
    assert settings.listen == "0.0.0.0:50051"
    assert settings.part_size == 8 * MiB
    assert settings.parts_in_flight == 4
    assert settings.checksum_mode == "when_required"
    assert settings.buckets == {"blobgate"}
    assert settings.object_size_limit == 8 * MiB * 10_000
    assert args.dev is False


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "blobgate.toml"
    config.write_text('default_bucket = "from-file"\npart_size = "16MiB"\nlog_level = "debug"\n')
    monkeypatch.setenv("BLOBGATE_DEFAULT_BUCKET", "from-env")
    monkeypatch.setenv("BLOBGATE_ALLOWED_BUCKETS", "alpha, beta")
    settings, _ = load_settings(["--config", str(config), "--parts-in-flight", "2"])
    assert settings.default_bucket == "from-env"  # env over file
    assert settings.part_size == 16 * MiB  # file over default
    assert settings.log_level == "DEBUG"
    assert settings.parts_in_flight == 2  # flag
    assert settings.buckets == {"from-env", "alpha", "beta"}
    settings, _ = load_settings(
        ["--config", str(config), "--default-bucket", "from-flag", "--create-buckets"]
    )
    assert settings.default_bucket == "from-flag"  # flag over env
    assert settings.create_buckets is True


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "blobgate.toml"
    config.write_text('s3_endpoint = "http://minio:9000"\n')
    monkeypatch.setenv("BLOBGATE_CONFIG", str(config))
    settings, _ = load_settings([])
    assert settings.s3_endpoint == "http://minio:9000"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--part-size", "4MiB"], "part_size must be between 5MiB and 5GiB"),
        (["--part-size", "lots"], "part_size"),
        (["--max-object-size", "1TiB"], "raise part_size or lower max_object_size"),
        (["--max-message-size", "1MiB"], "max_message_size"),
        (["--checksum-mode", "always"], "checksum_mode"),
        (["--listen", "50051"], "--listen / BLOBGATE_LISTEN"),
        (["--parts-in-flight", "0"], "parts_in_flight"),
    ],
)
def test_bad_settings_name_the_setting(argv: list[str], fragment: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(argv)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_config_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(["--config", str(missing)])
    broken = tmp_path / "broken.toml"
    broken.write_text("part_size = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(["--config", str(broken)])
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('part_sise = "8MiB"\n')
    with pytest.raises(SettingsError, match="unknown setting 'part_sise'"):
        load_settings(["--config", str(unknown)])
