"""trivox.toml validation: every problem is one line naming the file, the key and the expectation."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sipgw.config import Config, ConfigError, HostPort, load

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "trivox.toml"
TRIVOX = Path(sys.executable).with_name("trivox")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trivox.toml"
    path.write_text(text)
    return path


def schema_keys(cls: type = Config, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("toml", True):
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and not isinstance(default, HostPort):
            keys |= schema_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def document_keys(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in table.items():
        if isinstance(value, dict) and value:
            keys |= document_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_example_shows_every_key_with_its_default():
    with open(EXAMPLE, "rb") as f:
        document = tomllib.load(f)
    assert document_keys(document) == schema_keys()
    assert dataclasses.replace(load(EXAMPLE), source="x") == dataclasses.replace(Config(), source="x")


def test_example_documents_a_register_entry_with_every_key(tmp_path):
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("#   [[sip.register]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    path = write(tmp_path, "\n".join(block) + "\n")
    config = load(path, env={"PBX_PASSWORD": "x"})
    (account,) = config.sip.register
    with open(path, "rb") as f:
        shown = set(tomllib.load(f)["sip"]["register"][0])
    assert shown == {f.name for f in dataclasses.fields(type(account))}
    assert account.registrar == HostPort("pbx.example.com", 5060) and account.password == "x"


def test_embedded_default():
    config = load(None)
    assert config.sip.listen == HostPort("0.0.0.0", 5060)
    assert config.audiosocket.listen == HostPort("0.0.0.0", 9092)
    assert config.asr.type == "local" and config.tts.type == "local"
    assert config.dialog.handler == "echo"


def test_env_expansion(tmp_path):
    path = write(tmp_path, '[dialog]\ngreeting = "Hi from ${SITE_NAME}."\n')
    assert load(path, env={"SITE_NAME": "Acme"}).dialog.greeting == "Hi from Acme."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sip]\nlisten = "0.0.0.0:5060"\nlisen = 1\n',
         'sip.lisen: unknown key (expected one of: advertise, challenge_invites, codecs, keepalive, listen,'),
        ('[sip]\ntrusted_networks = ["10.0.0.0/33"]\n', 'sip.trusted_networks[0]: expected a network such as'),
        ('[sip]\nkeepalive = 1\n', "sip.keepalive: expected 0 (off) or 5..3600 seconds, got 1"),
        ('[[sip.users]]\nusername = "1000"\n', "sip.users[0].password: expected the user's password"),
        ('[sip]\nchallenge_invites = true\n', "sip.challenge_invites: needs at least one [[sip.users]] entry"),
        ('[[sip.register]]\nregistrar = "pbx:5060"\n', "sip.register[0].username: expected the account's user name"),
        ('[[sip.register]]\nregistrar = "pbx:5060"\nusername = "u"\nexpires = 5\n',
         "sip.register[0].expires: expected 60..86400 seconds, got 5"),
        ('[[sip.register]]\nregistar = "pbx:5060"\n', "sip.register[0].registar: unknown key"),
        ('[rtp]\nport_min = "10000"\n', "rtp.port_min: expected an integer, got a string"),
        ('[audiosocket]\nenabled = "yes"\n', "audiosocket.enabled: expected true or false, got a string"),
        ('[sip]\nlisten = "5060"\n', """sip.listen: expected "HOST:PORT", got '5060'"""),
        ('[sip]\nlisten = "[::1]:70000"\n', "sip.listen: port must be 0..65535, got 70000"),
        ('[dialog]\ngreeting = "${NO_SUCH_VARIABLE_HERE}"\n',
         "dialog.greeting: environment variable NO_SUCH_VARIABLE_HERE is not set"),
        ('sip = 5\n', "sip: expected a table [sip], got an integer"),
        ('[sip]\ncodecs = ["PCMU", "G729"]\n', "sip.codecs[1]: expected one of PCMU, PCMA, G722, L16, got 'G729'"),
        ('[rtp]\nport_min = 20000\nport_max = 10000\n', "rtp.port_max: expected 20001..65535, got 10000"),
        ('[vad]\nthreshold = 1.5\n', "vad.threshold: expected a number between 0 and 1, got 1.5"),
        ('[log]\nlevel = "loud"\n', "log.level: expected one of debug, info, warning, error, got 'loud'"),
        ('[sts]\nturn_detection = "push_to_talk"\n',
         "sts.turn_detection: expected one of server_vad, semantic_vad, trivox, got 'push_to_talk'"),
        ('[asr.options]\nsecret = "${NO_SUCH_VARIABLE_HERE}"\n',
         "asr.options.secret: environment variable NO_SUCH_VARIABLE_HERE is not set"),
        ('[sts]\ntype = "openai"\n', "sts.temperature: expected a number, got a string"),  # OPENAI_TEMPERATURE=hot
        ('[sip\n', "not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env={"OPENAI_TEMPERATURE": "hot"})
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_secret_value_never_in_message(tmp_path):
    path = write(tmp_path, '[rtp]\nport_min = 5\n[dialog]\ngreeting = "${TOKEN}"\n')
    with pytest.raises(ConfigError) as info:
        load(path, env={"TOKEN": "s3cr3t-value"})
    assert "s3cr3t-value" not in str(info.value)


def test_avr_sts_variables_fill_the_sts_keys_the_file_does_not_set(tmp_path):
    path = write(tmp_path, '[sts]\ntype = "openai"\nvoice = "verse"\n')
    env = {"OPENAI_MODEL": "gpt-realtime-mini", "OPENAI_VOICE": "alloy", "OPENAI_TEMPERATURE": "0.6",
           "OPENAI_MAX_TOKENS": "inf", "OPENAI_URL_INSTRUCTIONS": "http://127.0.0.1:1/instructions"}
    sts = load(path, env=env).sts
    assert (sts.model, sts.voice, sts.temperature, sts.max_output_tokens, sts.instructions_url) == (
        "gpt-realtime-mini", "verse", 0.6, 0, "http://127.0.0.1:1/instructions")
    assert load(path, env={**env, "OPENAI_MAX_TOKENS": "512"}).sts.max_output_tokens == 512
    # Only for OpenAI speech to speech: another STS (or none) ignores them.
    assert load(write(tmp_path, '[sts]\ntype = "avr"\n'), env=env).sts.model == ""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENAI_")}
    return subprocess.run([str(TRIVOX), *args], capture_output=True, text=True, timeout=120, env=env)


def test_check_ok():
    result = run_cli("check", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{EXAMPLE}: OK"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[sip]\nbogus = 1\n", "sip.bogus"),
        ("[rtp]\njitter_min_ms = 2.5\n", "rtp.jitter_min_ms"),
        ("[rtp]\njitter_min_ms = 100\njitter_max_ms = 50\n", "rtp.jitter_max_ms"),
        ('[sip]\ncodecs = ["G729"]\n', "sip.codecs[0]"),
        ('[dialog]\ngreeting = "${TRIVOX_TEST_UNSET}"\n', "dialog.greeting"),
        ('[dialog]\nhandler = "no_such_module_x:handle"\n', "dialog.handler"),
        ('[tts]\nvoice = "no-such-voice"\n', "tts"),
        ('[tts]\ntype = "cloud"\n', "tts: unknown TTS provider 'cloud': use one of avr, google, local, openai"),
        ('[asr]\ntype = "openai"\nkeywords = ["sales"]\n', "asr: OpenAI ASR has no option 'keywords'"),
        ('[llm]\ntype = "openai"\n', "llm: OpenAI LLM needs an API key: set OPENAI_API_KEY"),
        ('[llm]\ntype = "avr"\n', "llm: AVR LLM needs the service's URL: set llm.url"),
        ('[dialog]\nhandler = "agent"\n', "llm.type: the agent dialog needs a provider"),
        ('[dialog]\nhandler = "realtime"\n', "sts.type: the realtime dialog needs a provider"),
        ('[dialog]\ntools = ["no_such_module_x:lookup"]\n', "dialog.tools: cannot import tool module"),
    ],
)
def test_check_and_serve_fail_with_one_line_and_status_2(tmp_path, text, key):
    path = write(tmp_path, text)
    for command in (["check", "-c", str(path)], ["serve", "-c", str(path)]):
        result = run_cli(*command)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"trivox: {path}: {key}")


def test_missing_file():
    result = run_cli("check", "-c", "/nonexistent/trivox.toml")
    assert result.returncode == 2
    assert result.stderr.strip() == "trivox: /nonexistent/trivox.toml: no such file"


def test_bad_listen_flag():
    result = run_cli("serve", "--sip-listen", "localhost")
    assert result.returncode == 2
    assert result.stderr.strip() == """trivox: command line: --sip-listen: expected "HOST:PORT", got 'localhost'"""


def test_port_in_use_is_one_line_and_status_1():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli("serve", "--sip-listen", f"127.0.0.1:{port}", "--audiosocket-listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"trivox: cannot listen for SIP on udp 127.0.0.1:{port}: Address already in use")
