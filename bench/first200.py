#!/usr/bin/env python3
"""Exec to first 200: start a server binary, poll GET / until it answers 200,
print the elapsed milliseconds, stop it.

    first200.py [--listening] [--cpu N] PORT -- CMD...

--listening: exec to the first accepted TCP connection instead (what Cloud
Run's default TCP startup probe waits for). --cpu N: run the server on CPU N
only (the poller stays where it was started, e.g. under `taskset -c 0`)."""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def first_200(port: int, cmd: list[str], listening: bool, cpu: int | None) -> float:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
    try:
        deadline = start + 10
        while time.perf_counter() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if listening:
                        return (time.perf_counter() - start) * 1000
                    s.sendall(request)
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        return (time.perf_counter() - start) * 1000
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {proc.returncode} before answering")
        raise SystemExit(f"no answer within 10 s from {cmd[0]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--listening", action="store_true")
    parser.add_argument("--cpu", type=int)
    parser.add_argument("port", type=int)
    args = parser.parse_args(sys.argv[1:split])
    print(f"{first_200(args.port, sys.argv[split + 1 :], args.listening, args.cpu):.2f}")
