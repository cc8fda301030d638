"""The pure parts of process control: recognising ``lbctl serve`` in a command line, and
where sd_notify datagrams go. (The rest is tested with real processes in
``test_process_control.py``.)"""

from __future__ import annotations

import socket

import pytest

from lbctl.control.notify import Notifier
from lbctl.control.pidfile import read_pid
from lbctl.control.signals import serve_arguments
from lbctl.errors import UserError


@pytest.mark.parametrize("argv, expected", [
    (["/opt/lbctl/bin/python3", "/opt/lbctl/bin/lbctl", "serve", "--pid-file", "p", "lb.toml"],
     ["--pid-file", "p", "lb.toml"]),
    (["python3", "-m", "lbctl", "serve", "lb.toml"], ["lb.toml"]),
    (["lbctl", "serve", "lb.toml"], ["lb.toml"]),
    (["/usr/bin/python3", "/opt/lbctl/bin/lbctl", "validate", "lb.toml"], None),
    (["vim", "serve", "lb.toml"], None),             # a file named serve, opened in vim
    (["/usr/bin/notlbctl", "serve", "lb.toml"], None),
    (["serve"], None),
])
def test_serve_arguments(argv, expected):
    assert serve_arguments(argv) == expected


def test_no_notify_socket_means_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier.ready() is False


def test_the_notify_socket_is_read_once_and_taken_out_of_the_environment(monkeypatch, tmp_path):
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notifier = Notifier()
        import os
        assert "NOTIFY_SOCKET" not in os.environ        # children do not speak for lbctl
        assert notifier.status("hello") is True
        assert sock.recv(100) == b"STATUS=hello"


def test_addresses_it_does_not_speak_are_ignored():
    assert not Notifier("vsock:2:1234").enabled
    assert Notifier("@abstract").address == b"\0abstract"


@pytest.mark.parametrize("content", ["abc", "-5", "0", "12 13"])
def test_a_damaged_pid_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "x.pid"
    path.write_text(content)
    with pytest.raises(UserError, match=r"expected a process id") as info:
        read_pid(path)
    assert info.value.exit_code == 1
