"""The typed configuration: precedence, coercion, and errors that name the key."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from watcher.cli import cli
from watcher.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "turingwatch.toml"
    path.write_text(text)
    return path


def test_defaults_without_file(tmp_path):
    config = load_config(None, environ={})
    assert config.sampler.interval_s == 10.0 and config.file is None
    assert all(source == "default" for _, _, source in config.items())


def test_file_then_environment(tmp_path):
    path = write(tmp_path, "[sampler]\ninterval_s = 2\n[mail]\ncc = ['a@x', 'b@x']\n")
    config = load_config(path, environ={"TURINGWATCH_SAMPLER_INTERVAL_S": "1.5",
                                        "TURINGWATCH_MAIL_SMTP_PORT": "2525"})
    assert config.sampler.interval_s == 1.5 and config.mail.smtp_port == 2525
    assert config.mail.cc == ["a@x", "b@x"]
    sources = {k: s for k, _, s in config.items()}
    assert sources["sampler.interval_s"] == "env TURINGWATCH_SAMPLER_INTERVAL_S"
    assert sources["mail.cc"] == f"file {path}"
    assert sources["mail.smtp_host"] == "default"


def test_environment_types():
    config = load_config(None, environ={"TURINGWATCH_SAMPLER_GPU": "no",
                                        "TURINGWATCH_MAIL_SKIP_USERS": "root, slurm ,"})
    assert config.sampler.gpu is False and config.mail.skip_users == ["root", "slurm"]


def test_config_env_var_names_the_file(tmp_path):
    path = write(tmp_path, "[site]\nname = 'Turing'\n")
    assert load_config(None, environ={"TURINGWATCH_CONFIG": str(path)}).site.name == "Turing"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[sampler]\ninterval_s = 0.1\n", {}, "sampler.interval_s: must be at least 0.5"),
        ("[sampler]\ninterval_s = 'fast'\n", {}, "sampler.interval_s: must be a number"),
        ("[sampler]\nintervall_s = 1\n", {}, "unknown setting sampler.intervall_s (did you mean interval_s?)"),
        ("[samplr]\n", {}, "unknown section [samplr] (did you mean sampler?)"),
        ("[mail]\nsecurity = 'tls'\n", {}, "mail.security: must be one of none, starttls, ssl"),
        ("[mail]\ncc = 'a@x'\n", {}, "mail.cc: must be a list of strings"),
        ("[watcher\n", {}, "is not valid TOML"),
        ("", {"TURINGWATCH_MAIL_SMTP_PORT": "x"}, "from env TURINGWATCH_MAIL_SMTP_PORT"),
        ("", {"TURINGWATCH_SAMPLER_GPU": "maybe"}, "sampler.gpu: must be true or false"),
        ("", {"TURINGWATCH_SAMPLER_INTERVAL": "1"}, "unknown setting in environment: TURINGWATCH_SAMPLER_INTERVAL"),
    ],
)
def test_errors_name_the_key(tmp_path, text, environ, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ=environ)
    assert message in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_config_show(tmp_path, monkeypatch):
    path = write(tmp_path, "[sampler]\ninterval_s = 3\n")
    monkeypatch.setenv("TURINGWATCH_SITE_NAME", "Turing")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["sampler.interval_s"] == {"value": 3.0, "source": f"file {path}"}
    assert shown["site.name"] == {"value": "Turing", "source": "env TURINGWATCH_SITE_NAME"}
    bad = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.toml"), "config", "show"])
    assert bad.exit_code == 1 and "does not exist" in bad.output
