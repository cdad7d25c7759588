"""Bearer tokens and TLS files for tier services and their clients."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS. Give ``ca_path`` on a server to require client certificates
    (mutual TLS); on a client, ``ca_path`` is the root that signed the server's certificate
    and ``cert_path``/``key_path`` are the client's own, for mutual TLS.
    """

    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None

    @staticmethod
    def _read(path: Path | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    def server_credentials(self) -> grpc.ServerCredentials:
        key, cert = self._read(self.key_path), self._read(self.cert_path)
        if key is None or cert is None:
            raise ValueError("TLS for a server needs both cert_path and key_path")
        ca = self._read(self.ca_path)
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca_path),
            private_key=self._read(self.key_path),
            certificate_chain=self._read(self.cert_path),
        )


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` (none without one)."""
    return () if token is None else (("authorization", f"Bearer {token}"),)


def token_matches(metadata: tuple[tuple[str, str | bytes], ...] | None, token: str) -> bool:
    """Whether call metadata carries ``authorization: Bearer <token>`` (constant time)."""
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str):
            return hmac.compare_digest(value.encode(), f"Bearer {token}".encode())
    return False
