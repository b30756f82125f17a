#!/usr/bin/env python3
"""Drives the C examples (c_examples/) against real TLS clients.

One test case per invocation, so that ctest runs and reports them separately:

    run_case.py --bin-dir DIR CASE        (run_case.py --list shows the cases)

Every case starts its server on port 0, reads the port from the
`listening on ADDRESS:PORT` line, talks to it with openssl s_client, curl or
Python's ssl module, and finally stops the server with SIGTERM (or SIGINT) and
requires exit status 0 and no sanitizer report. Nothing sleeps to let things
happen: every wait is on an output line or a socket, with a generous timeout
(the suite also runs under ASan on a loaded 2-core machine).

The harness (processes, clients, the case registry) is harness.py; the
cases are in cases_*.py, one module per group. Standard library only. The test PKI comes from make_certs.sh (openssl CLI),
generated into a fresh temporary directory per case.
"""

import argparse
import os
import shutil
import ssl
import subprocess
import sys
import tempfile

# Each cases_* module registers its cases with @case when imported; the
# modules group them by concept, the ctest names are the case names.
import cases_client  # noqa: F401
import cases_client_certs  # noqa: F401
import cases_dtls  # noqa: F401
import cases_epoll  # noqa: F401
import cases_fleet  # noqa: F401
import cases_http  # noqa: F401
import cases_server_lifecycle  # noqa: F401
import cases_starttls  # noqa: F401
import cases_tls  # noqa: F401
from harness import ALL_PROCESSES, CASES, HERE, Failure, expect


class Context:
    def __init__(self, bin_dir, tmp):
        self.bin_dir = bin_dir
        self.tmp = tmp
        self.certs = os.path.join(tmp, "certs")
        self.procs = []

    def exe(self, name):
        path = os.path.join(self.bin_dir, name)
        expect(os.access(path, os.X_OK), f"{path} is not built")
        return path

    def cert(self, name):
        return os.path.join(self.certs, name)

    def track(self, proc):
        self.procs.append(proc)
        return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", help="directory holding the built examples")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("case", nargs="?")
    args = ap.parse_args()
    if args.list:
        print("\n".join(CASES))
        return 0
    if not args.case or args.case not in CASES or not args.bin_dir:
        ap.error(f"need --bin-dir and one of: {', '.join(CASES)}")

    tmp = tempfile.mkdtemp(prefix="sslserver-c-")
    ctx = Context(os.path.abspath(args.bin_dir), tmp)
    ok = False
    try:
        subprocess.run(["bash", os.path.join(HERE, "make_certs.sh"), ctx.certs], check=True,
                       timeout=60)
        CASES[args.case](ctx)
        ok = True
    except (Failure, ssl.SSLError, OSError, subprocess.SubprocessError) as e:
        print(f"FAIL {args.case}: {type(e).__name__}: {e}", flush=True)
    finally:
        for p in ALL_PROCESSES:
            p.kill()
        if not ok:
            for p in ALL_PROCESSES:
                p.dump()
        shutil.rmtree(tmp, ignore_errors=True)
    if ok:
        print(f"PASS {args.case}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
