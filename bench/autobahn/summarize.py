#!/usr/bin/env python3
"""Summarise an Autobahn|Testsuite fuzzingclient report directory.

Usage:
    python3 summarize.py REPORT_DIR [--expected expected.json] [--agent NAME ...]

REPORT_DIR holds wstest's index.json (agent -> case id -> {behavior,
behaviorClose, remoteCloseCode, duration, reportfile}) and the per-case
JSON files it names.

expected.json (written by ./run) is {"agents": [...], "cases": [...]}: the
agents and case ids that were asked for. An asked-for agent or case that is
absent from index.json is reported as MISSING (e.g. the target refused the
connection, or wstest stopped early) and counts as a failure.

Prints, per agent, the counts of OK / NON-STRICT / INFORMATIONAL /
UNIMPLEMENTED / FAILED (plus any other behaviour value), the close-handshake
anomalies, and every FAILED case with its description and result text.

Exit status: 0 when nothing FAILED or is MISSING, 1 otherwise, 2 on a
missing/unreadable report.
"""

import argparse
import json
import os
import sys

MAIN = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSE_OK = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def load_case(report_dir, entry):
    path = os.path.join(report_dir, entry.get("reportfile", ""))
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def one_line(s, limit=300):
    s = " ".join(str(s or "").split())
    return s if len(s) <= limit else s[: limit - 4] + " ..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report_dir")
    ap.add_argument("--expected", help="JSON {agents:[...], cases:[...]} written by ./run")
    ap.add_argument("--agent", action="append", default=[], help="only these agents (repeatable)")
    ap.add_argument("--json", help="also write a machine-readable summary here")
    args = ap.parse_args()

    index_path = os.path.join(args.report_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("summarize: cannot read %s: %s" % (index_path, e), file=sys.stderr)
        return 2

    expected_agents, expected_cases = [], None
    if args.expected:
        with open(args.expected) as f:
            exp = json.load(f)
        expected_agents = exp.get("agents", [])
        expected_cases = exp.get("cases")

    agents = args.agent or expected_agents or sorted(index)
    for a in sorted(index):
        if a not in agents and not args.agent:
            agents.append(a)

    bad = False
    out = {}
    for agent in agents:
        results = index.get(agent, {})
        counts = {k: 0 for k in MAIN}
        failed, close_issues = [], []
        total_ms = 0
        for cid in sorted(results, key=case_key):
            r = results[cid]
            b = r.get("behavior", "?")
            counts[b] = counts.get(b, 0) + 1
            total_ms += r.get("duration") or 0
            if b == "FAILED":
                failed.append(cid)
            bc = r.get("behaviorClose")
            if bc not in CLOSE_OK:
                close_issues.append((cid, bc, r.get("remoteCloseCode")))
        missing = []
        if expected_cases is not None:
            missing = sorted(set(expected_cases) - set(results), key=case_key)

        print("=" * 72)
        print("agent: %s   cases run: %d%s   (sum of case durations %.1f s)" % (
            agent, len(results),
            (" of %d expected" % len(expected_cases)) if expected_cases is not None else "",
            total_ms / 1000.0))
        line = "  ".join("%s=%d" % (k, counts[k]) for k in MAIN)
        extra = sorted(k for k in counts if k not in MAIN)
        if extra:
            line += "  " + "  ".join("%s=%d" % (k, counts[k]) for k in extra)
        if missing:
            line += "  MISSING=%d" % len(missing)
        print("  " + line)

        if close_issues:
            print("  close-handshake anomalies (behaviorClose, not counted as failures): %d" % len(close_issues))
            for cid, bc, code in close_issues[:20]:
                print("    %-10s %s (remote close code %s)" % (cid, bc, code))
            if len(close_issues) > 20:
                print("    ... %d more" % (len(close_issues) - 20))

        failed_detail = []
        if failed:
            print("  FAILED cases:")
            for cid in failed:
                d = load_case(args.report_dir, results[cid])
                desc, res = one_line(d.get("description")), one_line(d.get("result"))
                rc = one_line(d.get("resultClose"))
                print("    %s: %s" % (cid, desc))
                print("        result: %s" % res)
                if rc:
                    print("        close:  %s (%s)" % (rc, results[cid].get("behaviorClose")))
                failed_detail.append({"case": cid, "description": desc, "result": res, "resultClose": rc})
        if missing:
            shown = ", ".join(missing[:40]) + (" ..." if len(missing) > 40 else "")
            print("  MISSING cases (not in report): %s" % shown)

        if failed or missing or agent not in index:
            bad = True
        out[agent] = {"counts": counts, "failed": failed_detail, "missing": missing,
                      "close_anomalies": [list(x) for x in close_issues], "cases_run": len(results)}
    print("=" * 72)
    print("overall: %s" % ("FAILED" if bad else "PASSED"))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
