#!/usr/bin/env python3
"""Measure the CPU time (user + system) of a command over repeated runs.

Usage: cpu_time.py [--runs N] [--timeout SECONDS] [--expect-json-key KEY] -- COMMAND...

Runs COMMAND once to warm the page cache, then N more times, and prints one line:
    median_ms MEDIAN min_ms MIN max_ms MAX runs N
The figure is the whole process: start-up, runtime initialisation and exit are included, so it is
an upper bound on the work inside the command. CPU time comes from getrusage(RUSAGE_CHILDREN) in
microseconds, finer than the 10 ms steps that /usr/bin/time prints.

Exits with status 1 and a message on stderr when the command fails, times out, or (with
--expect-json-key) does not print a JSON object that has KEY.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys


def describe(command):
    """Return the program name and its first argument, such as `tidegate-agent inventory`."""
    return " ".join([os.path.basename(command[0])] + command[1:2])


def run_once(command, timeout):
    """Run the command and return (cpu seconds, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        sys.exit(f"{describe(command)} timed out after {timeout} s")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace").strip().splitlines()
        sys.exit(f"{describe(command)} exited with status {completed.returncode}: "
                 f"{stderr[0] if stderr else 'no stderr output'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, completed.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs after one warm-up run")
    parser.add_argument("--timeout", type=float, default=30, help="seconds allowed per run")
    parser.add_argument("--expect-json-key", metavar="KEY",
                        help="require the warm-up run to print a JSON object with this key")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("missing COMMAND after --")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")

    _, output = run_once(command, args.timeout)
    if args.expect_json_key:
        try:
            document = json.loads(output)
        except json.JSONDecodeError:
            sys.exit(f"{describe(command)} printed no JSON object "
                     f"({len(output)} bytes of output)")
        if not isinstance(document, dict) or args.expect_json_key not in document:
            sys.exit(f"{describe(command)} printed JSON without the key "
                     f"{args.expect_json_key!r}")

    samples_ms = [run_once(command, args.timeout)[0] * 1000 for _ in range(args.runs)]
    print(f"median_ms {statistics.median(samples_ms):.2f} min_ms {min(samples_ms):.2f} "
          f"max_ms {max(samples_ms):.2f} runs {len(samples_ms)}")


if __name__ == "__main__":
    main()
