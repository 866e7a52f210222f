"""run_dashboard.py binds its address before uvicorn starts: one line and exit 1 for a port in
use, exit 2 for an address that is not this machine's, and the page served when it is free."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import run_dashboard
from cloud.dashboard.serve import listening_socket
from der_core.cli_support import run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def taken_port():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def _run(argv) -> int:
    try:
        return run_cli(run_dashboard.main, argv)
    except SystemExit as exit_:  # what uvicorn does on a bind error
        return exit_.code


def test_a_port_in_use_is_one_line_naming_the_address_and_exit_1(tmp_path, monkeypatch, capsys, taken_port):
    monkeypatch.chdir(tmp_path)
    assert _run(["--port", str(taken_port)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"error: cannot serve on 127.0.0.1:{taken_port}: another program is listening there; "
                            f"give another --port (such as --port {taken_port + 1})\n")
    assert captured.out == ""


@pytest.mark.parametrize("host, message", [
    ("nosuch.invalid", "cannot serve on nosuch.invalid:8000: "),
    ("192.0.2.1", "cannot serve on 192.0.2.1:8000: "),  # TEST-NET-1: no machine's own address
])
def test_an_address_not_this_machines_is_a_usage_error(tmp_path, monkeypatch, capsys, host, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DASHBOARD_TOKEN", "t")  # no warning about exposing the API
    assert _run(["--host", host]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "--host" in err and err.count("\n") == 1


def test_the_bound_socket_is_not_listening_until_the_server_takes_it():
    """Bound, so no other program can take the port, but not accepting connections before the
    app is ready to answer them."""
    with listening_socket("127.0.0.1", 0) as sock, socket.socket() as client:
        with pytest.raises(ConnectionRefusedError):
            client.connect(sock.getsockname())


def test_a_free_port_serves_the_dashboard(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "run_dashboard.py"), "--port", str(port), "--quiet"],
                              cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60  # a wait for the start, not a measure of it
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sites", timeout=5) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
