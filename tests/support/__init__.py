"""What tests share: a real server in a subprocess, its config, and waiting on conditions.

Imported as `support` (pytest puts tests/ on sys.path); tests never import `conftest`, which
holds only fixtures."""
from .clients import aws_cli, aws_ok, boto_client
from .server import (
           DEFAULT_CONFIG,
           LISTENERS,
           REGION,
           ROOT,
           Server,
           Servers,
           free_port,
           networks_without_public_ips,
           write_config,
)
from .waits import eventually, wait_polls, wait_state, wait_until

__all__ = ["aws_cli", "eventually", "aws_ok", "boto_client", "DEFAULT_CONFIG", "LISTENERS", "REGION", "ROOT", "Server",
           "Servers", "free_port",
           "networks_without_public_ips", "wait_polls", "wait_state", "wait_until", "write_config"]
