"""Google Cloud providers: streaming Speech-to-Text (ASR) and Text-to-Speech (TTS), over gRPC.

Installed with the ``google`` extra (``pip install 'trivox[google]'``); nothing here is
imported unless the configuration names a Google provider.

What the two share lives here: how a client reaches the service and as whom, and how a
failure reads. Both use the official GAPIC clients (``SpeechClient``,
``TextToSpeechClient``) for credentials, endpoint resolution and the channel, and call
the gRPC methods of the client's transport directly (see ``thread_stream``): the
GAPIC wrappers of streaming methods block until the first response before handing over
the call, and a call nobody holds cannot be cancelled.

``endpoint`` overrides the service's address ("host:port"). A loopback host (an emulator,
the tests' fake) is spoken to in plaintext with no credentials; anything else over TLS
with the account's, as Google's own endpoints require.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, TypeVar

from ..base import ProviderError

try:
    import grpc
except ImportError:
    raise ProviderError("the Google providers need the google extra: pip install 'trivox[google]'") from None

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: gRPC's default 4 MB receive limit is less than a minute of 24 kHz LINEAR16; Google's
#: own channels lift both limits, and so do ours to a loopback endpoint.
CHANNEL_OPTIONS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
#: What to check first, by the status a call ended with.
_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: "check the credentials",
    grpc.StatusCode.PERMISSION_DENIED: "check that the account may use the API and that it is enabled in its project",
    grpc.StatusCode.INVALID_ARGUMENT: "check the provider's options",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the project's quota is used up",
    grpc.StatusCode.UNAVAILABLE: "check the network and the endpoint",
}

Client = TypeVar("Client")


def connect(client_class: type[Client], product: str, credentials: str, endpoint: str) -> Client:
    """A GAPIC client of ``client_class`` for ``product`` ("Google Speech-to-Text").

    Credentials are loaded here, at start-up, so a wrong path or a machine without an
    account fails before the first call rather than during it.
    """
    account = _load_credentials(product, credentials) if credentials else None
    if endpoint and _is_loopback(endpoint):
        transport = client_class.get_transport_class("grpc")(  # type: ignore[attr-defined]
            channel=grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS))
        return client_class(transport=transport)  # type: ignore[call-arg]
    if account is None:
        account = _default_credentials(product)
    options: dict[str, Any] = {"api_endpoint": endpoint} if endpoint else {}
    return client_class(credentials=account, client_options=options)  # type: ignore[call-arg]


def rpc_failure(product: str, exc: grpc.RpcError) -> ProviderError:
    """The one line a user reads when a call ended with a gRPC status."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return status_failure(product, code.name, details or "", _HINTS.get(code))


def status_failure(product: str, code: str, message: str, hint: str | None = None) -> ProviderError:
    """The one line for a failure the service reported as ``code`` (a google.rpc.Code name)."""
    text = f"{product} failed: {code}: {one_line(message) or 'no details'}"
    return ProviderError(f"{text} ({hint})" if hint else text)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _load_credentials(product: str, path: str) -> Any:
    from google.auth.exceptions import DefaultCredentialsError
    from google.oauth2.service_account import Credentials

    if not os.path.isfile(path):
        raise ProviderError(f"{product}: the credentials file {path} does not exist "
                            "(set google.credentials to a service-account JSON key file)")
    try:
        return Credentials.from_service_account_file(path, scopes=[SCOPE])
    except OSError as exc:
        raise ProviderError(f"{product}: cannot read the credentials file {path}: {exc.strerror}") from None
    except (DefaultCredentialsError, ValueError) as exc:
        # What google.auth says is wrong (missing fields, no key) never quotes the key.
        raise ProviderError(f"{product}: {path} is not a service-account key file: {one_line(exc)}") from None


def _default_credentials(product: str) -> Any:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        account, _ = google.auth.default(scopes=[SCOPE])
    except DefaultCredentialsError:
        raise ProviderError(f"{product}: no Google credentials found: set google.credentials to a service-account "
                            "key file, set GOOGLE_APPLICATION_CREDENTIALS, or run "
                            "`gcloud auth application-default login`") from None
    return account


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else endpoint
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
