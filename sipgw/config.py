"""trivox.toml: the schema, the embedded default, and validation.

The whole configuration is a tree of frozen dataclasses. The dataclass fields *are* the
schema: their names are the TOML keys, their annotations the expected types, their
defaults the embedded default. One generic walker validates a parsed TOML document
against that tree, so there is no second list of keys to keep in step with the code.

Every problem stops start-up with exactly one line that names the file, the dotted key
and what was expected (``ConfigError``). Strings may name environment variables as
``${NAME}``; a missing one is an error of the same shape, and the value itself never
appears in a message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any

from media.codecs import CODECS
from media.vad import VadConfig

from .audiosocket.wire import LAWS

EMBEDDED = "<embedded default>"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration problem, rendered as one line: ``file: key: what was expected``."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key


@dataclass(frozen=True)
class HostPort:
    """An address to bind or advertise, written ``HOST:PORT`` (IPv6 as ``[::1]:5060``)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text)
        if not match:
            raise ValueError(f'expected "HOST:PORT", got {text!r}')
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RegisterConfig:
    """One account trivox keeps registered (to Asterisk as a peer, say)."""

    #: The registrar to send REGISTER to, "HOST:PORT" (a name is resolved at start-up).
    registrar: HostPort = HostPort("", 5060)
    username: str = ""
    password: str = ""
    #: Address of record; empty means sip:USERNAME@REGISTRAR-HOST.
    aor: str = ""
    #: Seconds asked for; the registrar's grant is honoured and refreshed before it lapses.
    expires: int = 300


@dataclass(frozen=True)
class UserConfig:
    """A softphone user of standalone mode: it may REGISTER to trivox, and call it."""

    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class SipConfig:
    listen: HostPort = HostPort("0.0.0.0", 5060)
    #: Address written into Contact and SDP; empty means the local address that
    #: faces the peer (fine on a LAN, set it behind NAT).
    advertise: str = ""
    #: Codec preference, best first. RFC 3264: the answerer chooses among the offer.
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    user_agent: str = "trivox"
    #: Source networks allowed to start calls, e.g. ["10.0.0.10/32"] for an Asterisk trunk.
    #: Empty: anyone may call (a softphone on the LAN, the embedded default).
    trusted_networks: list[str] = field(default_factory=list)
    #: Accounts to register; none by default (trivox is then called as a trunk or directly).
    register: list[RegisterConfig] = field(default_factory=list)
    #: Seconds between OPTIONS keepalives to each registrar and inside each call; a call
    #: whose peer answers 481 or nothing is ended. 0 turns them off.
    keepalive: int = 30
    #: Transports on ``listen``: "udp" and "tcp" (RFC 3261 section 18 asks for both).
    transports: list[str] = field(default_factory=lambda: ["udp", "tcp"])
    #: Port for SIP over TLS on the host of ``listen``; 0: no TLS. Needs the two below.
    tls_port: int = 0
    #: PEM file with our certificate (and chain); the key too, unless ``tls_key`` is set.
    tls_certificate: str = ""
    tls_key: str = ""
    #: Standalone mode: users that may REGISTER to trivox (digest auth); none: REGISTER gets 405.
    users: list[UserConfig] = field(default_factory=list)
    #: Digest realm of those users' challenges.
    realm: str = "trivox"
    #: Challenge every new INVITE (401) and take calls only from the users above.
    challenge_invites: bool = False


@dataclass(frozen=True)
class RtpConfig:
    port_min: int = 10000
    port_max: int = 20000
    #: Bounds of the adaptive jitter buffer's delay, in milliseconds: it holds what the
    #: measured jitter needs, but never less than the first nor more than the second.
    jitter_min_ms: int = 20
    jitter_max_ms: int = 300


@dataclass(frozen=True)
class AudioSocketConfig:
    enabled: bool = True
    listen: HostPort = HostPort("0.0.0.0", 9092)
    #: The law of G.711 that Dial(AudioSocket/...c(ulaw|alaw)) sends under kind 0x10:
    #: "auto" tells them apart by the audio itself; "ulaw" or "alaw" fixes it.
    g711_law: str = "auto"


@dataclass(frozen=True)
class DialogConfig:
    #: A built-in dialog ("echo", "agent", "realtime") or a plugin as "package.module:function".
    handler: str = "echo"
    greeting: str = "Hello, this is trivox. Say something and I will repeat it."
    #: Seconds listen() waits for the caller before the dialog prompts again.
    listen_timeout: float = 10.0
    #: User tools the agent's model may call: "package.module:function" names of async
    #: functions (their docstring and annotations become the tool's description and schema).
    tools: list[str] = field(default_factory=list)
    #: Where the built-in transfer tool sends the caller (a SIP URI); empty: no transfer tool.
    transfer_to: str = ""


@dataclass(frozen=True)
class OpenAIConfig:
    """The OpenAI service (or any OpenAI-compatible one), shared by every OpenAI provider."""

    #: Empty: the OPENAI_API_KEY environment variable. A local server may need none.
    api_key: str = ""
    #: Empty: OpenAI's own. Any OpenAI-compatible server works (Ollama, vLLM, llama.cpp).
    base_url: str = ""
    timeout: float = 10.0
    max_retries: int = 2


@dataclass(frozen=True)
class GoogleConfig:
    """Google Cloud, shared by its Speech-to-Text and Text-to-Speech providers."""

    #: A service-account JSON file; empty: Application Default Credentials.
    credentials: str = ""
    #: "HOST:PORT" of the API; empty: Google's own.
    endpoint: str = ""


@dataclass(frozen=True)
class AsrConfig:
    #: local (pocketsphinx), openai (per utterance), openai-realtime (streaming),
    #: google (streaming), avr, or a provider from the trivox.providers entry points.
    type: str = "local"
    #: Empty: the provider's default model.
    model: str = ""
    #: "en", "en-US"...; empty: the provider's default.
    language: str = ""
    #: avr: the ASR service's base URL.
    url: str = ""
    #: local: spot only these words or phrases (a menu: ["sales", "support"]).
    keywords: list[str] = field(default_factory=list)
    #: local: a JSGF grammar file for menu-style dialogs.
    grammar: str = ""
    #: openai: words and names to expect (a prompt for the transcription model).
    prompt: str = ""
    #: Anything else a third-party provider takes.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LlmConfig:
    #: Empty: no language model (the echo dialog needs none); openai, avr, or an entry point.
    type: str = ""
    model: str = ""
    temperature: float = 0.7
    #: 0: the service's limit.
    max_tokens: int = 0
    #: The system prompt of the agent dialog.
    instructions: str = "You are a friendly voice agent on a phone call. Answer in one or two short sentences."
    #: avr: the LLM service's base URL.
    url: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TtsConfig:
    #: local (eSpeak NG), openai, google, avr, or an entry point.
    type: str = "local"
    #: Empty: the provider's default ("en-us" for eSpeak, "alloy" for OpenAI).
    voice: str = ""
    #: local: words per minute, and pitch 0..99.
    rate: int = 175
    pitch: int = 50
    model: str = ""
    #: openai: how to speak (a voice persona: "warm and calm, like a concierge").
    instructions: str = ""
    #: google: language of the voice; empty: taken from the voice name.
    language: str = ""
    #: openai, google: 1.0 is normal speed.
    speed: float = 1.0
    #: avr: the TTS service's base URL.
    url: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StsConfig:
    """Speech to speech (the "realtime" dialog): one model hears and speaks."""

    #: Empty: none; openai (the Realtime API), avr (an AVR STS connector), or an entry point.
    type: str = ""
    #: Empty: the provider's default (gpt-realtime). OPENAI_MODEL when not set here.
    model: str = ""
    #: OPENAI_VOICE.
    voice: str = ""
    #: The system prompt; OPENAI_INSTRUCTIONS. Or fetched per call from a URL that answers
    #: {"system": "..."} (OPENAI_URL_INSTRUCTIONS), or read from a file (OPENAI_FILE_INSTRUCTIONS).
    instructions: str = ""
    instructions_url: str = ""
    instructions_file: str = ""
    #: OPENAI_TEMPERATURE.
    temperature: float = 0.8
    #: 0: no limit. OPENAI_MAX_TOKENS.
    max_output_tokens: int = 0
    #: server_vad, semantic_vad (the service cuts turns), or trivox (our own VAD does).
    turn_detection: str = "server_vad"
    #: avr: the STS connector's WebSocket URL (ws://host:port).
    url: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TranscriptConfig:
    #: One JSON-lines file per call, written line by line as the call goes.
    #: Empty disables transcripts.
    dir: str = "transcripts"


@dataclass(frozen=True)
class AudioConfig:
    """What a call sounds like beyond the agent's voice, and what is kept of it."""

    #: A WAV file looped under the agent (an office, a shop); empty: none.
    ambience: str = ""
    #: Its level relative to the file's own, in dB (negative: quieter).
    ambience_level_db: float = -20.0
    #: Noise filling the agent's silences, RMS in dBFS (e.g. -65); 0: none, the line is
    #: silent between sentences (over RTP: no packets at all).
    comfort_noise_dbfs: float = 0.0
    #: Directory for one stereo WAV per call (caller left, agent right); empty: none.
    recordings: str = ""


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    rtp: RtpConfig = field(default_factory=RtpConfig)
    audiosocket: AudioSocketConfig = field(default_factory=AudioSocketConfig)
    dialog: DialogConfig = field(default_factory=DialogConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    sts: StsConfig = field(default_factory=StsConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    google: GoogleConfig = field(default_factory=GoogleConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    transcripts: TranscriptConfig = field(default_factory=TranscriptConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    log: LogConfig = field(default_factory=LogConfig)
    #: Where this configuration came from, for messages; not a TOML key.
    source: str = field(default=EMBEDDED, metadata={"toml": False})


_LOG_LEVELS = ("debug", "info", "warning", "error")
_TURN_DETECTION = ("server_vad", "semantic_vad", "trivox")
_CODECS = tuple(CODECS)


def load(path: str | os.PathLike[str] | None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path``; ``None`` gives the embedded default."""
    if path is None:
        return Config()
    source = str(path)
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    env = os.environ if env is None else env
    _avr_sts_environment(document, env)
    config = _build(Config, document, source, "", env)
    config = dataclasses.replace(config, source=source)
    _check_semantics(config)
    return config


#: avr-sts-openai's environment variables and the [sts] keys they stand for, so a
#: deployment moved from AVR keeps its settings; a key the file sets wins.
AVR_STS_ENVIRONMENT = {
    "OPENAI_MODEL": "model",
    "OPENAI_VOICE": "voice",
    "OPENAI_INSTRUCTIONS": "instructions",
    "OPENAI_URL_INSTRUCTIONS": "instructions_url",
    "OPENAI_FILE_INSTRUCTIONS": "instructions_file",
    "OPENAI_TEMPERATURE": "temperature",
    "OPENAI_MAX_TOKENS": "max_output_tokens",
}


def _avr_sts_environment(document: dict[str, Any], env: typing.Mapping[str, str]) -> None:
    """Fill [sts] keys of an OpenAI speech-to-speech config from AVR's variables.

    They are put into the document as the strings or numbers the file would hold, so
    the walker checks them like any key (a bad OPENAI_TEMPERATURE is an error naming
    ``sts.temperature``). AVR's "inf" for no token limit is our 0.
    """
    sts = document.get("sts")
    if not isinstance(sts, dict) or sts.get("type") != "openai":
        return
    for variable, key in AVR_STS_ENVIRONMENT.items():
        if key in sts or variable not in env:
            continue
        value: Any = env[variable]
        if key == "temperature":
            value = _number(value, float)
        elif key == "max_output_tokens":
            value = 0 if value.strip().lower() == "inf" else _number(value, int)
        sts[key] = value


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text  # left as a string: the walker reports the key and the type


def _build(cls: type, table: dict[str, Any], source: str, prefix: str, env: typing.Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("toml", True)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            expected = ", ".join(sorted(fields))
            raise ConfigError(source, dotted, f"unknown key (expected one of: {expected})")
        values[key] = _convert(hints[key], raw, source, dotted, env)
    return cls(**values)


def _convert(hint: Any, raw: Any, source: str, key: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint is not HostPort:
        if not isinstance(raw, dict):
            raise ConfigError(source, key, f"expected a table [{key}], got {_kind(raw)}")
        return _build(hint, raw, source, f"{key}.", env)
    if hint is HostPort:
        text = _convert(str, raw, source, key, env)
        try:
            return HostPort.parse(text)
        except ValueError as exc:
            raise ConfigError(source, key, str(exc)) from None
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(source, key, f"expected a string, got {_kind(raw)}")
        return _expand_env(raw, source, key, env)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(source, key, f"expected true or false, got {_kind(raw)}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(source, key, f"expected an integer, got {_kind(raw)}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {_kind(raw)}")
        return float(raw)
    if typing.get_origin(hint) is dict:  # free-form options for third-party providers
        if not isinstance(raw, dict):
            raise ConfigError(source, key, f"expected a table [{key}], got {_kind(raw)}")
        return {name: _convert(Any, value, source, f"{key}.{name}", env) for name, value in raw.items()}
    if hint is Any:
        if isinstance(raw, str):
            return _expand_env(raw, source, key, env)
        if isinstance(raw, list):
            return [_convert(Any, value, source, f"{key}[{i}]", env) for i, value in enumerate(raw)]
        if isinstance(raw, dict):
            return _convert(dict[str, Any], raw, source, key, env)
        return raw
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(raw, list):
            raise ConfigError(source, key, f"expected an array, got {_kind(raw)}")
        return [_convert(item, value, source, f"{key}[{i}]", env) for i, value in enumerate(raw)]
    raise TypeError(f"unsupported schema type for {key}: {hint}")


def _expand_env(text: str, source: str, key: str, env: typing.Mapping[str, str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(source, key, f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(lookup, text)


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _check_semantics(config: Config) -> None:
    """Rules that types alone cannot say; each names its key."""
    src = config.source
    for i, codec in enumerate(config.sip.codecs):
        if codec not in _CODECS:
            raise ConfigError(src, f"sip.codecs[{i}]", f"expected one of {', '.join(_CODECS)}, got {codec!r}")
    if not config.sip.codecs:
        raise ConfigError(src, "sip.codecs", "expected at least one codec")
    for i, network in enumerate(config.sip.trusted_networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(src, f"sip.trusted_networks[{i}]",
                              f'expected a network such as "10.0.0.0/8" or "192.0.2.7", got {network!r}') from None
    for i, account in enumerate(config.sip.register):
        key = f"sip.register[{i}]"
        if not account.registrar.host:
            raise ConfigError(src, f"{key}.registrar", 'expected "HOST:PORT" of the registrar')
        if not account.username:
            raise ConfigError(src, f"{key}.username", "expected the account's user name")
        if account.aor and not account.aor.startswith(("sip:", "sips:")):
            raise ConfigError(src, f"{key}.aor", f"expected a sip: URI, got {account.aor!r}")
        if not 60 <= account.expires <= 86400:
            raise ConfigError(src, f"{key}.expires", f"expected 60..86400 seconds, got {account.expires}")
    sip = config.sip
    if "udp" not in sip.transports or not set(sip.transports) <= {"udp", "tcp"}:
        raise ConfigError(src, "sip.transports", f'expected ["udp"] or ["udp", "tcp"], got {sip.transports}')
    if not 0 <= sip.tls_port <= 65535:
        raise ConfigError(src, "sip.tls_port", f"expected 0 (no TLS) or a port, got {sip.tls_port}")
    for i, user in enumerate(sip.users):
        if not user.username or not user.password:
            missing = "username" if not user.username else "password"
            raise ConfigError(src, f"sip.users[{i}].{missing}", f"expected the user's {missing}")
    if sip.challenge_invites and not sip.users:
        raise ConfigError(src, "sip.challenge_invites", "needs at least one [[sip.users]] entry to check against")
    if sip.tls_port and not sip.tls_certificate:
        raise ConfigError(src, "sip.tls_certificate", "SIP over TLS (sip.tls_port) needs a PEM certificate file")
    if config.sip.keepalive and not 5 <= config.sip.keepalive <= 3600:
        raise ConfigError(src, "sip.keepalive", f"expected 0 (off) or 5..3600 seconds, got {config.sip.keepalive}")
    rtp = config.rtp
    if not (1024 <= rtp.port_min <= 65534):
        raise ConfigError(src, "rtp.port_min", f"expected 1024..65534, got {rtp.port_min}")
    if not (rtp.port_min < rtp.port_max <= 65535):
        raise ConfigError(src, "rtp.port_max", f"expected {rtp.port_min + 1}..65535, got {rtp.port_max}")
    if not -60.0 <= config.audio.ambience_level_db <= 20.0:
        raise ConfigError(src, "audio.ambience_level_db", f"expected -60..20 dB, got {config.audio.ambience_level_db}")
    if not (config.audio.comfort_noise_dbfs == 0.0 or -96.0 <= config.audio.comfort_noise_dbfs <= -30.0):
        raise ConfigError(src, "audio.comfort_noise_dbfs",
                          f"expected 0 (off) or -96..-30 dBFS, got {config.audio.comfort_noise_dbfs}")
    if config.audiosocket.g711_law not in LAWS:
        raise ConfigError(src, "audiosocket.g711_law",
                          f"expected one of {', '.join(LAWS)}, got {config.audiosocket.g711_law!r}")
    if not 0 <= rtp.jitter_min_ms <= 1000:
        raise ConfigError(src, "rtp.jitter_min_ms", f"expected 0..1000 milliseconds, got {rtp.jitter_min_ms}")
    if not rtp.jitter_min_ms <= rtp.jitter_max_ms <= 2000:
        raise ConfigError(src, "rtp.jitter_max_ms",
                          f"expected {rtp.jitter_min_ms}..2000 milliseconds (at least jitter_min_ms), "
                          f"got {rtp.jitter_max_ms}")
    if not 0.0 < config.vad.threshold < 1.0:
        raise ConfigError(src, "vad.threshold", f"expected a number between 0 and 1, got {config.vad.threshold}")
    for name in ("min_speech_ms", "min_silence_ms", "padding_ms"):
        value = getattr(config.vad, name)
        if not 0 <= value <= 10_000:
            raise ConfigError(src, f"vad.{name}", f"expected 0..10000 milliseconds, got {value}")
    if not -120.0 <= config.vad.energy_floor_dbfs <= 0.0:
        raise ConfigError(src, "vad.energy_floor_dbfs", f"expected -120..0 dBFS, got {config.vad.energy_floor_dbfs}")
    if config.dialog.listen_timeout <= 0:
        raise ConfigError(src, "dialog.listen_timeout", f"expected seconds > 0, got {config.dialog.listen_timeout}")
    if config.log.level not in _LOG_LEVELS:
        raise ConfigError(src, "log.level", f"expected one of {', '.join(_LOG_LEVELS)}, got {config.log.level!r}")
    if config.sts.turn_detection not in _TURN_DETECTION:
        raise ConfigError(src, "sts.turn_detection",
                          f"expected one of {', '.join(_TURN_DETECTION)}, got {config.sts.turn_detection!r}")
    if not 0.0 <= config.llm.temperature <= 2.0:
        raise ConfigError(src, "llm.temperature", f"expected 0..2, got {config.llm.temperature}")
    if config.openai.timeout <= 0:
        raise ConfigError(src, "openai.timeout", f"expected seconds > 0, got {config.openai.timeout}")
    if not 0 <= config.openai.max_retries <= 10:
        raise ConfigError(src, "openai.max_retries", f"expected 0..10, got {config.openai.max_retries}")

