"""The dashboard's listening socket, bound before the web server starts.

Bound here rather than by uvicorn: uvicorn reports an address it cannot take as several log
lines and exits 3, which reads as a crash; an address in use is the user's to change (another
``--port``), said in one line like every other error, and the socket bound here is the one
uvicorn serves on, so no other program can take the port in between.
"""

from __future__ import annotations

import errno
import socket

from der_core.errors import DERError, UsageError


class AddressInUse(DERError):
    """Another program listens on the address and port: a state of the machine that may pass,
    not a wrong command line (exit 1)."""


class AddressUnavailable(UsageError):
    """The address to serve on is not this machine's, or the port is one it may not open."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening; the server does that)."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise AddressUnavailable(f"cannot serve on {shown}: {error.strerror}; expected an address or name of this "
                                 "machine for --host") from None
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restart may bind while the last run's connections linger in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot serve on {shown}: another program is listening there; give another "
                                     f"--port (such as --port {port + 1 if port < 65535 else 8000})") from None
        raise AddressUnavailable(f"cannot serve on {shown}: {error.strerror}; expected an address of this machine "
                                 "for --host and a port it may open (below 1024 needs root)") from None
    return sock
