"""All settings, read and validated in one place, and the timeout hierarchy derived from them.

No other module reads the environment: everything below is built once at start-up and passed
down. Settings come from real environment variables first, then from an optional `.env` file
(`EXAI_ENV_FILE` names it; default `.env` in the working directory). Variable names match in any
case, and an empty value counts as unset.

    settings = load_settings()                 # ConfigError names each bad variable
    kimi = settings.provider("kimi")           # ProviderSettings: key, key_variable, base_url...
    for provider in settings.configured_providers(): ...
    settings.warnings()                        # valid but suspicious: placeholder keys, ...

The per-provider variables are those of the specs in `exai_mcp.providers.registry`.

The timeout hierarchy (T = WORKFLOW_TOOL_TIMEOUT_SECS):

    provider attempt (KIMI_/GLM_TIMEOUT_SECS) <= tool budget (T, or EXPERT_ANALYSIS_TIMEOUT_SECS)
        < server deadline ceil(1.5 T) < client timeout, at least ceil(2.5 T)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from exai_mcp.errors import ConfigError, InputError
from exai_mcp.providers.catalog import ModelCatalog
from exai_mcp.providers.registry import GLM, KIMI, PROVIDERS, SPECS, ProviderSpec
from exai_mcp.redact import redact_url

MIN_TOOL_TIMEOUT = 1
MAX_TOOL_TIMEOUT = 3600
DEADLINE_RATIO = 1.5
SHIM_RATIO = 2.0
CLIENT_RATIO = 2.5
DAEMON_MODES = ("off", "auto", "require", "spawn")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseModel):
    """Every variable exai-mcp reads. Field aliases are the variable names users set.

    `Settings.from_environment()` reads them; `Settings(field=value)` builds settings in code.
    """

    # No inf or nan: every float here is a time or a rate, and nan compares false with all.
    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, allow_inf_nan=False
    )

    log_level: str = Field("INFO", validation_alias=_env("EXAI_LOG_LEVEL"))
    log_format: str = Field(
        "text",
        validation_alias=_env("EXAI_LOG_FORMAT"),
        description="`text` (human-readable, the default) or `json`: one JSON object per "
        "line on stderr, and one line per finished call.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        validation_alias=_env("EXAI_METRICS_PORT"),
        description="In stdio mode, serve Prometheus /metrics on 127.0.0.1 at this port "
        "(0: any free port, logged). Unset: no metrics server. `serve --http` always has "
        "/metrics.",
    )
    otel_endpoint: str | None = Field(
        None,
        validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Export OpenTelemetry traces over OTLP http/protobuf to this collector "
        "(needs the exai-mcp[otel] extra). Unset: no tracing at all.",
    )

    # Per provider, named by its spec in exai_mcp.providers.registry (checked at import below):
    # <name>_api_key, _base_url, _default_model, _max_inflight, _timeout. Read them through
    # provider(name), which also knows which key variable was used.
    kimi_api_key: SecretStr | None = Field(None, validation_alias=_env(*KIMI.key_variables))
    kimi_base_url: str = Field(KIMI.base_url_default, validation_alias=_env(KIMI.base_url_variable))
    kimi_default_model: str = Field(KIMI.model_default, validation_alias=_env(KIMI.model_variable))
    kimi_max_inflight: int = Field(
        KIMI.max_inflight_default, ge=1, le=1000, validation_alias=_env(KIMI.max_inflight_variable)
    )
    kimi_timeout: float | None = Field(None, validation_alias=_env(KIMI.timeout_variable))
    glm_api_key: SecretStr | None = Field(None, validation_alias=_env(*GLM.key_variables))
    glm_base_url: str = Field(GLM.base_url_default, validation_alias=_env(GLM.base_url_variable))
    glm_default_model: str = Field(GLM.model_default, validation_alias=_env(GLM.model_variable))
    glm_max_inflight: int = Field(
        GLM.max_inflight_default, ge=1, le=1000, validation_alias=_env(GLM.max_inflight_variable)
    )
    glm_timeout: float | None = Field(None, validation_alias=_env(GLM.timeout_variable))
    # Which variable each provider's key came from, filled by from_environment (no variable
    # sets it: a stray KEY_ORIGINS changes nothing).
    key_origins: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    default_model: str = Field("auto", validation_alias=_env("EXAI_DEFAULT_MODEL"))

    tool_timeout: float = Field(180, validation_alias=_env("WORKFLOW_TOOL_TIMEOUT_SECS"))
    expert_timeout: float | None = Field(
        None, validation_alias=_env("EXPERT_ANALYSIS_TIMEOUT_SECS")
    )
    client_timeout: float | None = Field(None, validation_alias=_env("EXAI_CLIENT_TIMEOUT_SECS"))

    max_attempts: int = Field(3, ge=1, le=10, validation_alias=_env("EXAI_MAX_ATTEMPTS"))
    # Below the sum of the provider limits (6 + 4), so that it limits something.
    max_inflight: int = Field(
        8,
        ge=1,
        le=1000,
        validation_alias=_env("EXAI_MAX_INFLIGHT"),
        description="Provider requests in flight at once across all providers (each call "
        "also needs its provider's permit).",
    )
    client_max_inflight: int = Field(
        8,
        ge=1,
        le=1000,
        validation_alias=_env("EXAI_CLIENT_MAX_INFLIGHT"),
        description="Calls one client (MCP session, REST X-Client-Id, or stdio) may run at once, "
        "cache hits included (1..1000); more wait behind that client's own, not the others'.",
    )
    session_max_pending: int = Field(
        64,
        ge=1,
        le=10_000,
        validation_alias=_env("EXAI_SESSION_MAX_PENDING"),
        description="Requests one client session may have without a reply (1..10000). A call "
        "beyond it is refused at once with a busy result naming this variable. A reply counts "
        "only once it is being written out, so a client that stops reading its replies soon "
        "stops being read from too (back-pressure).",
    )
    cancel_grace: float = Field(10, ge=0, validation_alias=_env("EXAI_CANCEL_GRACE_SECS"))
    cache_ttl: float = Field(600, ge=0, validation_alias=_env("EXAI_RESULT_CACHE_TTL_SECS"))
    cache_max_entries: int = Field(
        256, ge=0, validation_alias=_env("EXAI_RESULT_CACHE_MAX_ENTRIES")
    )
    breaker_failures: int = Field(5, ge=1, validation_alias=_env("EXAI_BREAKER_FAILURES"))
    breaker_cooldown: float = Field(30, gt=0, validation_alias=_env("EXAI_BREAKER_COOLDOWN_SECS"))
    health_interval: float = Field(30, gt=0, validation_alias=_env("EXAI_HEALTH_INTERVAL_SECS"))
    progress_interval: float = Field(5, gt=0, validation_alias=_env("EXAI_PROGRESS_INTERVAL_SECS"))
    max_output_tokens: int = Field(20_000, ge=100, validation_alias=_env("EXAI_MAX_OUTPUT_TOKENS"))

    max_file_bytes: int = Field(1 << 20, ge=1, validation_alias=_env("EXAI_MAX_FILE_BYTES"))
    allowed_roots: tuple[str, ...] = Field((), validation_alias=_env("EXAI_ALLOWED_ROOTS"))
    state_db: str | None = Field(None, validation_alias=_env("EXAI_STATE_DB"))
    thread_ttl_hours: float = Field(24, gt=0, validation_alias=_env("EXAI_THREAD_TTL_HOURS"))
    max_thread_turns: int = Field(50, ge=2, validation_alias=_env("EXAI_MAX_THREAD_TURNS"))

    # `exai-mcp serve --http`: one process and one pipeline for every HTTP client.
    http_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("EXAI_HTTP_HOST"),
        description="Address `serve --http` binds. Anything but loopback needs EXAI_HTTP_TOKEN.",
    )
    http_port: int = Field(8079, ge=0, le=65535, validation_alias=_env("EXAI_HTTP_PORT"))
    http_token: SecretStr | None = Field(
        None,
        validation_alias=_env("EXAI_HTTP_TOKEN"),
        description="Bearer token every HTTP endpoint but /health requires when set.",
    )
    http_max_body_bytes: int = Field(
        8 << 20, ge=1024, validation_alias=_env("EXAI_HTTP_MAX_BODY_BYTES")
    )
    shutdown_grace: float = Field(
        30,
        ge=0,
        validation_alias=_env("EXAI_SHUTDOWN_GRACE_SECS"),
        description="On SIGTERM/SIGINT, seconds calls in flight get to finish before they "
        "are cancelled.",
    )

    # Attaching stdio processes to that one server (the shim): see transports/attach.py.
    daemon: str = Field(
        "off",
        validation_alias=_env("EXAI_DAEMON"),
        description="off: serve in this process; auto: attach to the daemon when it answers "
        "/health, else serve in-process; require: always attach; spawn: attach, starting "
        "`exai-mcp serve --http` when none answers.",
    )
    daemon_url: str = Field("http://127.0.0.1:8079", validation_alias=_env("EXAI_DAEMON_URL"))
    daemon_idle_exit: float = Field(
        900,
        ge=0,
        validation_alias=_env("EXAI_DAEMON_IDLE_EXIT_SECS"),
        description="A daemon started by EXAI_DAEMON=spawn exits after this many seconds with "
        "no session and no call (0: never).",
    )
    # Several servers as one (exai_mcp/shared): unset keeps all state in this process.
    redis_url: SecretStr | None = Field(
        None,
        validation_alias=_env("EXAI_REDIS_URL"),
        description="redis://[:password@]host:port/db or rediss:// (TLS): the Redis through "
        "which several exai-mcp processes share cache, single-flight, limits, quotas, breakers "
        "and threads. Unset: everything stays in this process.",
    )
    redis_prefix: str = Field(
        "exai:",
        min_length=1,
        max_length=64,
        validation_alias=_env("EXAI_REDIS_PREFIX"),
        description="Namespace of every key, so several deployments can share one Redis.",
    )
    redis_lease: float = Field(
        10,
        ge=0.2,
        le=300,
        validation_alias=_env("EXAI_REDIS_LEASE_SECS"),
        description="Lease of a permit or a single-flight leadership: what a dead process "
        "holds comes back within this time.",
    )
    redis_timeout: float = Field(
        1.0,
        gt=0,
        le=10,
        validation_alias=_env("EXAI_REDIS_TIMEOUT_SECS"),
        description="Longest wait for one Redis operation; past it the server goes on "
        "with in-process state (degraded).",
    )
    # Provider quotas (token buckets, shared through Redis when EXAI_REDIS_URL is set).
    kimi_rpm: int | None = Field(None, ge=1, validation_alias=_env("EXAI_KIMI_RPM"))
    kimi_tpm: int | None = Field(None, ge=1, validation_alias=_env("EXAI_KIMI_TPM"))
    glm_rpm: int | None = Field(None, ge=1, validation_alias=_env("EXAI_GLM_RPM"))
    glm_tpm: int | None = Field(None, ge=1, validation_alias=_env("EXAI_GLM_TPM"))

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
    ) -> Settings:
        """Settings from `environ` (default: this process's environment), then from `env_file`
        when it exists; pydantic's ValidationError names each bad variable.

        Each setting takes the first of its variables set in the environment, else the first
        set in the file, so a key set in the environment under any of its names wins over the
        file. Which variable gave each provider its key is kept for error messages.
        """
        sources: list[Mapping[str, str | None]] = [os.environ if environ is None else environ]
        if env_file is not None and Path(env_file).is_file():
            sources.append(_read_env_file(env_file))
        values, variables = _pick_variables(sources)
        origins = {
            spec.name: variables.get(f"{spec.name}_api_key", spec.key_variable)
            for spec in PROVIDERS
        }
        return cls.model_validate({**values, "key_origins": origins})

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (in any case)")
        return level

    @field_validator("daemon")
    @classmethod
    def _known_daemon_mode(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in DAEMON_MODES:
            raise ValueError(f"must be one of {', '.join(DAEMON_MODES)}")
        return mode

    @field_validator("daemon_url")
    @classmethod
    def _daemon_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, like http://127.0.0.1:8079")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                "must name the server only (http://HOST:PORT), without a path: the shim adds "
                "/mcp and /health itself"
            )
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("kimi_base_url", "glm_base_url")
    @classmethod
    def _provider_url(cls, value: str, info: ValidationInfo) -> str:
        url = value.strip()
        example = SPECS[str(info.field_name).removesuffix("_base_url")].base_url_default
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"has an invalid port; expected a URL like {example}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, like {example}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not hold a user name or password: the API key goes as a bearer token, "
                "which credentials in the URL would replace"
            )
        return url

    @field_validator("default_model")
    @classmethod
    def _known_default_model(cls, value: str) -> str:
        # Checked now: otherwise every `auto` call fails, blaming an argument nobody sent.
        name = value.strip()
        every_provider = ModelCatalog({spec.name: spec.model_default for spec in PROVIDERS})
        try:
            every_provider.resolve(name)
        except InputError as exc:
            raise ValueError(str(exc).removeprefix(f"model: {name!r} ")) from None
        return name

    @field_validator("http_token", mode="before")
    @classmethod
    def _token_as_sent(cls, value: Any) -> Any:
        # Clients strip what they send, so a stray space or newline (a token pasted from a
        # file) would lock everyone out; a blank token is no token (and so no open bind).
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        fmt = value.strip().lower()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
        return fmt

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never quotes the URL: it may hold a password.
        if value is None:
            return value
        url = value.get_secret_value().strip()
        scheme = url.partition("://")[0].lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        try:
            parts = urlsplit(url)
            port = parts.port  # ValueError for a port that is no number or out of range
        except ValueError:
            raise ValueError(
                "is not a valid URL (check the host, a [bracketed] IPv6 address, and the "
                "port, 0-65535), like redis://:PASSWORD@127.0.0.1:6379/0"
            ) from None
        if scheme == "unix" and not parts.path:
            raise ValueError("must name the socket's path, like unix:///run/redis/redis.sock")
        del port  # checked above; redis-py fills in a missing host and port
        return SecretStr(url)

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        # Path lists use the OS separator (":" or ";"), as PATH does.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(os.pathsep) if part.strip())
        return value

    def provider(self, name: str) -> ProviderSettings:
        """One provider's settings, configured or not; KeyError for a name not in the registry."""
        spec = SPECS[name]
        return ProviderSettings(
            spec=spec,
            api_key=getattr(self, f"{name}_api_key"),
            key_variable=self.key_origins.get(name, spec.key_variable),
            base_url=getattr(self, f"{name}_base_url"),
            default_model=getattr(self, f"{name}_default_model"),
            max_inflight=getattr(self, f"{name}_max_inflight"),
        )

    def providers(self) -> tuple[ProviderSettings, ...]:
        """Every provider's settings, configured or not, in registry (`model=auto`) order."""
        return tuple(self.provider(spec.name) for spec in PROVIDERS)

    def configured_providers(self) -> tuple[ProviderSettings, ...]:
        """The providers with a key, in registry (`model=auto`) order."""
        return tuple(p for p in self.providers() if p.configured)

    def attempt_timeout(self, name: str) -> float | None:
        """The provider's attempt timeout as set (KIMI_TIMEOUT_SECS ...), None when unset."""
        return getattr(self, f"{SPECS[name].name}_timeout")  # KeyError for an unknown name

    def effective_roots(self) -> tuple[Path, ...]:
        """EXAI_ALLOWED_ROOTS, or by default the user's home and the working directory.

        A home or working directory that is a filesystem root is left out of the default: GUI
        clients often start servers in `/`, and `docker run --user N` (no passwd entry) sets
        HOME=/; neither may open the whole disk. So the default may be empty, and then every
        file is refused with a reason naming EXAI_ALLOWED_ROOTS (a root of `/` given there is
        taken as meant).
        """
        if self.allowed_roots:
            return tuple(Path(r).expanduser().resolve() for r in self.allowed_roots)
        try:
            home: Path | None = Path.home().resolve()
        except RuntimeError:  # no HOME and no passwd entry: no home to allow
            home = None
        roots: list[Path] = []
        for place in (home, Path.cwd().resolve()):
            if place is not None and place != Path(place.anchor) and place not in roots:
                roots.append(place)
        return tuple(roots)

    def missing_roots(self) -> tuple[str, ...]:
        """The EXAI_ALLOWED_ROOTS entries that are not existing directories."""
        return tuple(r for r in self.allowed_roots if not Path(r).expanduser().is_dir())

    def warnings(self) -> list[str]:
        """Valid settings that are almost certainly not what was meant; logged at start-up.

        Never quotes a key: a key is described by the variable that holds it.
        """
        out: list[str] = []
        for provider in self.configured_providers():
            problem = provider.key_problem
            if problem:
                out.append(
                    f"{provider.key_variable} {problem}: {provider.spec.name} will refuse every "
                    f"call (HTTP 401) until it holds your {provider.spec.title} API key"
                )
        for root in self.missing_roots():
            what = (
                "does not exist" if not Path(root).expanduser().exists() else "is not a directory"
            )
            out.append(f"EXAI_ALLOWED_ROOTS names {root}, which {what}: no file can be read there")
        if not self.allowed_roots and not self.effective_roots():
            out.append(
                "no directory is allowed for file access: the home and working directories are "
                "both the filesystem root; set EXAI_ALLOWED_ROOTS to the directories tools may read"
            )
        return out

    def timeouts(self) -> Timeouts:
        return Timeouts.from_settings(self)


def _check_provider_fields() -> None:
    """Every spec in the registry has its fields in Settings: fail at import, not at a call."""
    missing = [
        f"{spec.name}_{what}"
        for spec in PROVIDERS
        for what in ("api_key", "base_url", "default_model", "max_inflight", "timeout")
        if f"{spec.name}_{what}" not in Settings.model_fields
    ]
    if missing:
        raise TypeError(f"Settings lacks fields for registered providers: {', '.join(missing)}")


_check_provider_fields()


def _read_env_file(path: str | Path) -> Mapping[str, str | None]:
    # Imported here: most servers run without a .env file.
    from dotenv import dotenv_values

    try:
        return dotenv_values(path, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the .env file {path} cannot be read: {exc}") from None


def _pick_variables(
    sources: Sequence[Mapping[str, str | None]],
) -> tuple[dict[str, str], dict[str, str]]:
    """The raw value of each field's variable, keyed by that variable, and which variable each
    field was read from. Sources in order of precedence; names in any case.

    The first source that names a field's variable decides it, even with an empty value: an
    empty value is unset, so `KIMI_API_KEY=` in the environment turns off a key in .env.
    """
    folded = [
        {name.upper(): value for name, value in s.items() if value is not None} for s in sources
    ]
    values: dict[str, str] = {}
    variables: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if not isinstance(alias, AliasChoices):
            continue
        names = [str(choice) for choice in alias.choices]
        for source in folded:
            named = [name for name in names if name in source]
            if not named:
                continue
            variable = next((name for name in named if source[name]), None)
            if variable is not None:
                values[variable] = source[variable]
                variables[field_name] = variable
            break
    return values, variables


_PLACEHOLDER_SHAPE = re.compile(
    r"your[-_ ].*|<.*>|x{3,}.*|change[-_ ]?me|sk-x+|\.\.\.", re.IGNORECASE
)


def problem_with_key(key: str) -> str | None:
    """Why `key` cannot be a real API key (a placeholder, blank, spaced), or None.

    The answer describes the key's shape only, never the key.
    """
    stripped = key.strip()
    if not stripped:
        return "holds only whitespace"
    placeholders = {spec.key_placeholder.lower() for spec in PROVIDERS}
    if stripped.lower() in placeholders or _PLACEHOLDER_SHAPE.fullmatch(stripped):
        return "holds a placeholder, not a key"
    if any(ch.isspace() for ch in key):
        return "contains whitespace, which no API key does"
    return None


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """One provider's settings: `Settings.provider(name)`."""

    spec: ProviderSpec
    api_key: SecretStr | None
    key_variable: str  # where the key came from (MOONSHOT_API_KEY ...); the first when unset
    base_url: str
    default_model: str
    max_inflight: int

    @property
    def configured(self) -> bool:
        return self.api_key is not None

    @property
    def key_problem(self) -> str | None:
        """Why the key cannot be a real one (see `problem_with_key`), or None; never the key."""
        return problem_with_key(self.api_key.get_secret_value()) if self.api_key else None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The validated timeout hierarchy, in seconds.

    `attempt` holds one provider attempt's timeout by provider name; `timeouts.kimi` reads
    `timeouts.attempt["kimi"]`.
    """

    tool: float
    expert: float
    attempt: Mapping[str, float]
    server_deadline: int
    client_minimum: int
    client_configured: float | None
    defaulted: frozenset[str] = frozenset()  # variables not set, which follow T
    shim: int = 0  # what an attached stdio process waits for the daemon: ceil(2T)
    attached: bool = False  # EXAI_DAEMON is not off: the shim is part of the hierarchy

    @classmethod
    def from_settings(cls, s: Settings) -> Timeouts:
        t = s.tool_timeout
        set_attempts = {spec.name: s.attempt_timeout(spec.name) for spec in PROVIDERS}
        return cls(
            tool=t,
            expert=s.expert_timeout if s.expert_timeout is not None else t,
            attempt=MappingProxyType(
                {name: t if value is None else value for name, value in set_attempts.items()}
            ),
            # ceil, not round: round(1.5 * 3) == 4 but round(2.5 * 3) == 8 breaks the ratios.
            server_deadline=math.ceil(DEADLINE_RATIO * t),
            client_minimum=math.ceil(CLIENT_RATIO * t),
            client_configured=s.client_timeout,
            shim=math.ceil(SHIM_RATIO * t),
            attached=s.daemon != "off",
            defaulted=frozenset(
                var
                for var, value in (
                    ("EXPERT_ANALYSIS_TIMEOUT_SECS", s.expert_timeout),
                    *((SPECS[n].timeout_variable, v) for n, v in set_attempts.items()),
                )
                if value is None
            ),
        )

    def __getattr__(self, name: str) -> float:
        # Only called when normal lookup fails: `timeouts.glm` is the GLM attempt timeout.
        try:
            return object.__getattribute__(self, "attempt")[name]
        except (AttributeError, KeyError):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}") from None

    def bounded(self) -> list[tuple[str, float]]:
        """(variable, value) of each timeout that must be at most T."""
        return [("EXPERT_ANALYSIS_TIMEOUT_SECS", self.expert)] + [
            (spec.timeout_variable, self.attempt[spec.name]) for spec in PROVIDERS
        ]

    def problems(self) -> list[str]:
        """Each rule the configuration breaks, naming the variable, its value and the rule."""
        out: list[str] = []
        t = self.tool
        if not MIN_TOOL_TIMEOUT <= t <= MAX_TOOL_TIMEOUT:
            out.append(
                f"WORKFLOW_TOOL_TIMEOUT_SECS={_fmt(t)} is outside the allowed range "
                f"{MIN_TOOL_TIMEOUT}..{MAX_TOOL_TIMEOUT} seconds"
            )
        for var, value in self.bounded():
            if var in self.defaulted:
                continue
            if value <= 0:
                out.append(f"{var}={_fmt(value)} must be greater than 0")
            elif value > t:
                out.append(
                    f"{var}={_fmt(value)} is above WORKFLOW_TOOL_TIMEOUT_SECS={_fmt(t)}; "
                    "it must be at most that (provider attempt <= tool timeout)"
                )
        c = self.client_configured
        if c is not None and c < self.server_deadline:
            out.append(
                f"EXAI_CLIENT_TIMEOUT_SECS={_fmt(c)} is below the server deadline "
                f"{self.server_deadline} s (ceil(1.5 x {_fmt(t)})); the client would give up on "
                f"calls the server is still answering: set it to at least {self.client_minimum}"
            )
        if self.attached:
            out.extend(self._shim_problems())
        return out

    def _shim_problems(self) -> list[str]:
        """server deadline ceil(1.5T) < shim ceil(2T) < client ceil(2.5T), strictly: each
        layer gives up after the one below it, so the one below always answers first."""
        t, shim = _fmt(self.tool), self.shim
        if not self.server_deadline < shim < self.client_minimum:
            return [
                f"WORKFLOW_TOOL_TIMEOUT_SECS={t} leaves no room for the shim (EXAI_DAEMON): "
                f"server deadline {self.server_deadline} s < shim {shim} s (ceil(2 x {t})) < "
                f"client {self.client_minimum} s must hold; use at least 2 seconds"
            ]
        c = self.client_configured
        if c is not None and self.server_deadline <= c <= shim:
            return [
                f"EXAI_CLIENT_TIMEOUT_SECS={_fmt(c)} is not above the shim's {shim} s "
                f"(ceil(2 x {t})): the client would give up on calls the daemon is still "
                f"answering; set it to at least {self.client_minimum}"
            ]
        return []

    def warnings(self) -> list[str]:
        c = self.client_configured
        if c is not None and self.server_deadline <= c < self.client_minimum:
            return [
                f"EXAI_CLIENT_TIMEOUT_SECS={_fmt(c)} is at or above the server deadline "
                f"({self.server_deadline} s) but below the recommended ceil(2.5 x "
                f"{_fmt(self.tool)}) = {self.client_minimum} s"
            ]
        return []

    def describe(self) -> str:
        """The one line logged at start-up."""
        t = self.tool
        attempts = " ".join(f"{name}={_fmt(value)}s" for name, value in self.attempt.items())
        return (
            f"timeouts: tool={_fmt(t)}s expert={_fmt(self.expert)}s {attempts} "
            f"server_deadline={self.server_deadline}s "
            f"({self.server_deadline / t:.2f}x) "
            + (f"shim={self.shim}s ({self.shim / t:.2f}x) " if self.attached else "")
            + f"client_minimum={self.client_minimum}s "
            f"({self.client_minimum / t:.2f}x)"
            + (
                f" client_configured={_fmt(self.client_configured)}s"
                if self.client_configured
                else ""
            )
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "tool_secs": self.tool,
            "expert_secs": self.expert,
            **{f"{name}_attempt_secs": value for name, value in self.attempt.items()},
            "server_deadline_secs": self.server_deadline,
            "shim_secs": self.shim if self.attached else None,
            "client_minimum_secs": self.client_minimum,
            "client_configured_secs": self.client_configured,
        }


def _fmt(value: float) -> str:
    return f"{value:g}"


def named_env_file() -> str | None:
    """The `.env` file EXAI_ENV_FILE names, if any (default: `.env` in the working directory)."""
    # In any case, like every other variable name.
    return next((v for k, v in os.environ.items() if k.upper() == "EXAI_ENV_FILE" and v), None)


def load_settings(env_file: str | None = None, *, check_timeouts: bool = True) -> Settings:
    """Read and validate every setting; raise ConfigError naming each bad variable.

    Real environment variables win over the `.env` file (`EXAI_ENV_FILE`, default `.env`).
    `check_timeouts=False` returns settings whose hierarchy is broken, for `doctor` to report.
    """
    env_file = env_file or named_env_file()
    if env_file and not Path(env_file).is_file():
        raise ConfigError(f"EXAI_ENV_FILE={env_file} does not name a readable file")
    try:
        settings = Settings.from_environment(env_file=env_file or ".env")
    except ValidationError as exc:
        raise ConfigError("invalid settings:\n" + _describe_validation(exc)) from None
    problems = settings.timeouts().problems() if check_timeouts else []
    if problems:
        raise ConfigError("invalid timeout hierarchy:\n" + "\n".join(f"  - {p}" for p in problems))
    return settings


# Values never quoted in an error: they may hold a password.
_HIDDEN_FIELDS = frozenset({"redis_url", "EXAI_REDIS_URL", "http_token", "EXAI_HTTP_TOKEN"})
# Shown with any user and password masked.
_URL_FIELDS = frozenset(
    {"kimi_base_url", "glm_base_url", KIMI.base_url_variable, GLM.base_url_variable}
)


def _describe_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if name in _URL_FIELDS and isinstance(value, str) and "@" in value:
            value = redact_url(value)
        shown = "(hidden)" if name in _HIDDEN_FIELDS else repr(value)
        lines.append(f"  - {_variable_for(name)}={shown}: {message}")
    return "\n".join(lines)


def _variable_for(name: str) -> str:
    """The variable a user sets for a field (errors may carry the field or alias name)."""
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return name
