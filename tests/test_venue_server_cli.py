"""`python -m aegis.venue`: help, one-line errors with exit code 2, URLs printed, clean SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _run(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "aegis.venue", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_help_teaches_urls_and_examples():
    r = _run("--help")
    assert r.returncode == 0
    assert "/public/stream?streams=" in r.stdout and "--rate" in r.stdout and "examples:" in r.stdout


def test_bad_option_value_is_one_line_error_with_exit_2():
    r = _run("--rate", "fast")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--rate" in r.stderr and "Traceback" not in r.stderr


def test_unknown_option_is_one_line_error_with_exit_2():
    r = _run("--frobnicate")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0


def test_missing_replay_file_is_one_line_error_with_exit_2(tmp_path):
    r = _run("--replay", str(tmp_path / "nope.jsonl.gz"))
    assert r.returncode == 2 and "not found" in r.stderr and r.stderr.strip().count("\n") == 0


def test_runs_alone_prints_urls_and_stops_cleanly_on_sigterm():
    p = subprocess.Popen([sys.executable, "-m", "aegis.venue", "--port", "0", "--rate", "100"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        rest_url = None
        deadline = time.monotonic() + 45
        while rest_url is None and time.monotonic() < deadline:  # a cold numba cache compiles for ~20 s
            line = p.stdout.readline()
            if line.strip().startswith("rest_url"):
                rest_url = line.split()[1]
        assert rest_url and rest_url.startswith("http://127.0.0.1:")
        r = requests.get(rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=5", timeout=5)
        assert r.status_code == 200 and len(r.json()["bids"]) == 5
        # the accepted built-in key is shown at start (it is public: without it nobody can sign)
        lines = [p.stdout.readline() for _ in range(3)]
        key_line = next(x for x in lines if x.strip().startswith("api key"))
        assert "aegis-test-key" in key_line and "aegis-test-secret" in key_line
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=8) == 0
        assert "Traceback" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_keys_given_on_the_command_line_are_not_echoed():
    p = subprocess.Popen([sys.executable, "-m", "aegis.venue", "--port", "0", "--rate", "10", "--api-key",
                          "mykey:mysecretvalue"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        out = []
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            out.append(line)
            if line.strip().startswith("symbols"):
                break
        text = "".join(out)
        assert "api keys      1 accepted" in text
        assert "mysecretvalue" not in text and "mykey" not in text
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=8) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
