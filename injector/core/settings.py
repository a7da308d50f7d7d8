"""Settings for `serve`: command-line flags, each also settable as MESHER_INJECTOR_<FLAG>."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from injector.core import limits
from injector.core.names import NEVER_INJECTED, TEMPLATE_CONFIGMAP, TEMPLATE_KEY

ENV_PREFIX = "MESHER_INJECTOR_"
# The embedded default, shipped inside the package so it is found from any directory: the
# one template people edit (`make run` serves it; deploy/template/ holds a generated copy).
DEFAULT_TEMPLATE_FILE = Path(str(resources.files("injector").joinpath("default_template.yaml")))


def env_name(flag: str) -> str:
    """`--admin-port` -> `MESHER_INJECTOR_ADMIN_PORT`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8443
    admin_port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    self_signed: bool = False
    self_signed_dir: Path | None = None
    template_source: str = "file"
    template_file: Path = DEFAULT_TEMPLATE_FILE
    configmap: str = ""
    kube_api_server: str = ""
    watch_read_timeout: float = limits.WATCH_READ_TIMEOUT_S
    watch_timeout: int = limits.WATCH_TIMEOUT_S
    rollout_watch: bool = True  # with template_source configmap: lead, watch pods, export
    log_format: str = "json"
    log_level: str = "info"
    max_body_bytes: int = limits.MAX_BODY_BYTES
    max_body_bytes_in_flight: int = limits.MAX_BODY_BYTES_IN_FLIGHT
    read_timeout: float = limits.READ_TIMEOUT_S
    keepalive_timeout: float = limits.KEEPALIVE_TIMEOUT_S
    shutdown_timeout: float = limits.SHUTDOWN_TIMEOUT_S
    drain_seconds: float = 0.0
    reload_interval: float = limits.RELOAD_INTERVAL_S
    excluded_namespaces: frozenset[str] = field(default=NEVER_INJECTED)


# Which ConfigMap holds the templates (here, not with the watcher: serving from a file
# never imports kubernetes_asyncio, a third of the start-up time).


@dataclass(frozen=True, slots=True)
class ConfigMapRef:
    namespace: str
    name: str
    key: str = TEMPLATE_KEY

    @classmethod
    def parse(cls, text: str, *, default_namespace: str) -> ConfigMapRef:
        """`NS/NAME`, `NAME` or empty: the namespace defaults to `default_namespace` (the
        pod's own for `serve`, mesher-system for the commands)."""
        namespace, _, name = text.strip().rpartition("/")
        namespace = namespace or default_namespace
        if not namespace:
            raise ValueError(
                "the ConfigMap's namespace is unknown: pass --configmap NAMESPACE/NAME "
                "or set POD_NAMESPACE"
            )
        return cls(namespace=namespace, name=name or TEMPLATE_CONFIGMAP)

    @property
    def field_selector(self) -> str:
        return f"metadata.name={self.name}"

    def describe(self, resource_version: str = "") -> str:
        at = f"@{resource_version}" if resource_version else ""
        return f"configmap:{self.namespace}/{self.name}{at}"
