#!/usr/bin/env python3
"""Exec to first 200: start a server binary, poll GET / until it answers 200,
print the elapsed milliseconds, stop it. Usage: first200.py PORT -- CMD..."""
import os
import signal
import socket
import subprocess
import sys
import time


def first_200(port: int, cmd: list[str], env: dict[str, str]) -> float:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = start + 10
        while time.perf_counter() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(request)
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        return (time.perf_counter() - start) * 1000
            except OSError:
                pass
        raise SystemExit(f"no 200 within 10 s from {cmd[0]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    port = int(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    print(f"{first_200(port, cmd, dict(os.environ)):.2f}")
