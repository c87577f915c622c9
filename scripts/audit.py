#!/usr/bin/env python3
"""`make audit`: known vulnerabilities in the installed dependencies (pip-audit), with an
answer that cannot be mistaken: every package audited and none vulnerable, or not.

pip-audit alone exits 0 when its vulnerability service could not look a package up (it
"skips" it: "Dependency not found on PyPI and could not be audited") and 1 both for a
vulnerability and for a crash on an unreachable service. This wrapper reads its JSON report
and says which:

  exit 0  every installed package was audited; no known vulnerability
  exit 1  known vulnerabilities (each listed with the versions that fix it)
  exit 2  the audit could not be done, or not for every package (each named, with why)

It audits the environment it runs in (`make audit` runs it with the project's .venv: the
pinned requirements and everything they pull in), against PyPI's vulnerability data by
default. A failed try is tried again (--tries) before exit 2. Policy for CI and what the
service answered from this machine: docs/operations/security.md.

Usage: python scripts/audit.py [--service pypi|osv] [--osv-url URL] [--tries N]
                               [--cache-dir DIR] [-- PIP_AUDIT_ARGS...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

CLEAN, VULNERABLE, NOT_AUDITED = 0, 1, 2


def run_pip_audit(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """One pip-audit run: (its JSON report, or None when it produced none; its stderr)."""
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner",
               "off", "--skip-editable", "--vulnerability-service", args.service,
               "--timeout", str(args.timeout)]
    if args.osv_url:
        command += ["--osv-url", args.osv_url]
    if args.cache_dir:
        command += ["--cache-dir", args.cache_dir]
    command += args.pip_audit_args
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        return None, result.stderr
    if not isinstance(report, dict) or not isinstance(report.get("dependencies"), list):
        return None, result.stderr
    return report, result.stderr


def verdict(report: dict[str, Any]) -> tuple[int, list[str]]:
    """(exit status, lines to print) for one report."""
    dependencies = report["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    lines = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            lines.append(f"VULNERABLE {dep['name']} {dep.get('version', '?')}: {vuln['id']}"
                         + (f" ({aliases})" if aliases else "") + f"; fixed in: {fixes}")
    for dep in skipped:
        lines.append(f"NOT AUDITED {dep['name']}: {dep['skip_reason']}")
    audited = len(dependencies) - len(skipped)
    if vulnerable:
        lines.append(f"{len(vulnerable)} vulnerable package(s) among {audited} audited.")
        return VULNERABLE, lines
    if skipped or not dependencies:
        lines.append(f"Audit incomplete: {len(skipped)} of {len(dependencies)} package(s) "
                     f"could not be audited. This is NOT a clean result.")
        return NOT_AUDITED, lines
    lines.append(f"{audited} packages audited: no known vulnerabilities.")
    return CLEAN, lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi")
    parser.add_argument("--osv-url", default="")
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--timeout", type=int, default=15)
    parser.add_argument("--tries", type=int, default=2)
    parser.add_argument("--retry-wait", type=float, default=10.0)
    parser.add_argument("pip_audit_args", nargs="*", help="after --: passed to pip-audit")
    args = parser.parse_args(argv)

    status, lines = NOT_AUDITED, ["pip-audit did not run."]
    for attempt in range(1, max(1, args.tries) + 1):
        report, stderr = run_pip_audit(args)
        if report is None:
            # no report: pip-audit stopped, e.g. its service could not be reached
            last = (stderr.strip().splitlines() or ["(no output)"])[-1]
            status, lines = NOT_AUDITED, [f"pip-audit produced no report: {last}",
                                          "Audit not done. This is NOT a clean result."]
        else:
            status, lines = verdict(report)
        if status != NOT_AUDITED or attempt == args.tries:
            break
        print(f"audit try {attempt} incomplete; trying again in {args.retry_wait:g} s",
              file=sys.stderr)
        time.sleep(args.retry_wait)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
