#!/usr/bin/env python3
"""Checks what promtool and amtool cannot: that the alert rules are all tested, and that the
Alertmanager inhibitions fit the alerts the rules really produce.

    python3 deploy/prometheus/check_alerts.py

Exits non-zero with one line per problem. Needs PyYAML (Debian: python3-yaml) and amtool
(Debian: prometheus-alertmanager). Reads only; writes nothing.

1. Every alert rule (by alertname and severity) fires in some `promtool test rules` case of
   deploy/prometheus/tests/, and every alertname is also asserted quiet in some case
   (`exp_alerts: []`); every rule has a severity (critical, warning, info), a summary and a
   description.
2. The alerts those tests expect are turned into what Alertmanager receives: the external
   labels of the Prometheus that evaluates them are added (appliance.yml for rules/*.yml, once
   per appliance of the example site deploy/examples/riverside/site.toml; hub.yml for
   rules/hub/*.yml), then appliance.yml's alert_relabel_configs are applied. For every
   inhibit rule of each Alertmanager file: its source and target matchers each match some of
   those alerts, every label in `equal` is carried by all of them, and at least one source
   alert would mute one target alert (so the rule can work). The pairs are printed.
3. Each of those alerts routes to the receiver of its severity (`amtool config routes test`).
4. email-example.yml has the same routes (but receiver names) and inhibitions as
   alertmanager.yml.
"""

import glob
import os
import re
import subprocess
import sys
import tomllib

import yaml

DEPLOY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM = os.path.join(DEPLOY, "prometheus")
AM_FILES = [
    ("alertmanager.yml", "opsgenie-"),
    ("email-example.yml", "email-"),
]
SEVERITIES = ("critical", "warning", "info")

problems = []


def problem(text):
    problems.append(text)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- 1. rules and their tests ---------------------------------------------------------------

def rules_of(pattern):
    """alertname -> list of rule dicts, from the rule files matching pattern."""
    found = {}
    for path in sorted(glob.glob(os.path.join(PROM, pattern))):
        for group in load(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.setdefault(rule["alert"], []).append(rule)
    return found


SIDES = {
    "appliance": {"rules": rules_of("rules/*.yml"), "config": load(os.path.join(PROM, "appliance.yml"))},
    "hub": {"rules": rules_of("rules/hub/*.yml"), "config": load(os.path.join(PROM, "hub.yml"))},
}

for side, info in SIDES.items():
    for name, rules in info["rules"].items():
        for rule in rules:
            severity = rule.get("labels", {}).get("severity")
            if severity not in SEVERITIES:
                problem(f"{side} rule {name}: severity {severity!r} is not one of {SEVERITIES}")
            for key in ("summary", "description"):
                if not rule.get("annotations", {}).get(key, "").strip():
                    problem(f"{side} rule {name}: no {key} annotation")

# Expected alerts of every test case, by side.
fired = {side: set() for side in SIDES}  # (alertname, severity)
quiet = {side: set() for side in SIDES}  # alertname
expected = {side: [] for side in SIDES}  # label dicts with alertname
for path in sorted(glob.glob(os.path.join(PROM, "tests", "*.yml"))):
    test = load(path)
    side = "hub" if any("hub/" in f for f in test["rule_files"]) else "appliance"
    for number, case in enumerate(test["tests"]):
        for art in case.get("alert_rule_test", []):
            name = art["alertname"]
            if name not in SIDES[side]["rules"]:
                problem(f"{os.path.basename(path)}: tests {name}, which no {side} rule file has")
            alerts = art.get("exp_alerts") or []
            if not alerts:
                quiet[side].add(name)
            for alert in alerts:
                labels = {k: str(v) for k, v in alert.get("exp_labels", {}).items()}
                labels["alertname"] = name
                # Which test case expects it (not a label: keys starting "__" are ignored).
                labels["__case"] = f"{os.path.basename(path)}#{number}"
                fired[side].add((name, labels.get("severity")))
                if labels not in expected[side]:
                    expected[side].append(labels)

for side, info in SIDES.items():
    for name, rules in info["rules"].items():
        for rule in rules:
            severity = rule.get("labels", {}).get("severity")
            if (name, severity) not in fired[side]:
                problem(f"{side} rule {name} ({severity}) never fires in deploy/prometheus/tests")
        if name not in quiet[side]:
            problem(f"{side} rule {name} is never asserted quiet (exp_alerts: []) in deploy/prometheus/tests")


# --- 2. what Alertmanager receives -----------------------------------------------------------

def relabel(labels, configs):
    """Prometheus relabelling, the `replace` action (the only one the configs use)."""
    labels = dict(labels)
    for rc in configs or []:
        action = rc.get("action", "replace")
        if action != "replace":
            problem(f"alert_relabel_configs: action {action} is not modelled by this check")
            continue
        value = rc.get("separator", ";").join(labels.get(s, "") for s in rc.get("source_labels", []))
        m = re.fullmatch(rc.get("regex", "(.*)"), value)
        if not m:
            continue
        replacement = rc.get("replacement", "$1")
        result = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "", replacement)
        if result:
            labels[rc["target_label"]] = result
        else:
            labels.pop(rc["target_label"], None)
    return labels


def received(side):
    """The alerts of `side`'s tests as Alertmanager would receive them."""
    config = SIDES[side]["config"]
    external = config["global"].get("external_labels", {})
    instances = [external]
    if side == "appliance":
        # One set of external labels per appliance of the example site, as Ansible writes them.
        with open(os.path.join(DEPLOY, "examples", "riverside", "site.toml"), "rb") as f:
            site = tomllib.load(f)
        if set(external) != {"site", "appliance", "appliance_id"}:
            problem(f"appliance.yml external_labels are {sorted(external)}, expected site, appliance, appliance_id")
        instances = [
            {"site": site["site"]["name"], "appliance": a["name"], "appliance_id": str(a["id"])}
            for a in site["appliances"]
        ]
        if {k: str(v) for k, v in external.items()} not in instances:
            problem(f"appliance.yml external_labels {external} are not one of the example site's appliances")
    out = []
    for ext in instances:
        for labels in expected[side]:
            sent = dict(labels)
            for k, v in ext.items():
                sent.setdefault(k, str(v))
            sent = relabel(sent, config.get("alerting", {}).get("alert_relabel_configs"))
            if not sent.get("site"):
                problem(f"{side} alert {labels} reaches Alertmanager without a site label")
            out.append(sent)
    return out


ALERTS = received("appliance") + received("hub")

MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def matcher(text):
    m = MATCHER.match(text)
    if not m:
        problem(f"cannot read matcher {text!r}")
        return lambda labels: False
    name, op, value = m.groups()

    def test(labels):
        have = labels.get(name, "")
        if op == "=":
            return have == value
        if op == "!=":
            return have != value
        hit = re.fullmatch(value, have) is not None
        return hit if op == "=~" else not hit

    return test


def show(labels):
    keep = {k: v for k, v in labels.items()
            if k not in ("alertname", "job", "instance", "severity") and not k.startswith("__")}
    return labels["alertname"] + "{" + ", ".join(f"{k}={v}" for k, v in sorted(keep.items())) + "}"


am_configs = {}
for file, prefix in AM_FILES:
    config = load(os.path.join(DEPLOY, "alertmanager", file))
    am_configs[file] = config
    print(f"== {file}: inhibitions")
    for i, rule in enumerate(config.get("inhibit_rules", []), 1):
        src = [matcher(m) for m in rule.get("source_matchers", [])]
        tgt = [matcher(m) for m in rule.get("target_matchers", [])]
        equal = rule.get("equal", [])
        sources = [a for a in ALERTS if all(t(a) for t in src)]
        targets = [a for a in ALERTS if all(t(a) for t in tgt)]
        where = f"{file} inhibit rule {i} ({rule.get('source_matchers')} -> {rule.get('target_matchers')})"
        if not sources:
            problem(f"{where}: no tested alert matches the source")
        if not targets:
            problem(f"{where}: no tested alert matches the target")
        for a in sources + targets:
            missing = [label for label in equal if not a.get(label)]
            if missing:
                problem(f"{where}: {show(a)} lacks {missing}, which `equal` compares")
        pairs = [
            (s, t) for s in sources for t in targets
            if s is not t and all(s.get(label) == t.get(label) for label in equal)
        ]
        if sources and targets and not pairs:
            problem(f"{where}: no tested source alert would ever mute a tested target alert")
        if pairs:
            # Show a pair from one test case (one scenario) when there is one.
            s, t = next((p for p in pairs if p[0]["__case"] == p[1]["__case"]), pairs[0])
            print(f"  {i}. {show(s)} mutes {show(t)}  (equal {equal}; {len(pairs)} pairs)")

    # --- 3. routes -------------------------------------------------------------------------
    seen = set()
    for a in ALERTS:
        key = tuple(sorted((k, v) for k, v in a.items() if not k.startswith("__")))
        if key in seen:
            continue
        seen.add(key)
        want = prefix + a["severity"]
        args = ["amtool", "config", "routes", "test", f"--config.file={os.path.join(DEPLOY, 'alertmanager', file)}",
                f"--verify.receivers={want}"] + [f"{k}={v}" for k, v in key]
        try:
            run = subprocess.run(args, capture_output=True, text=True)
        except FileNotFoundError:
            problem("amtool is not installed (Debian package prometheus-alertmanager)")
            break
        if run.returncode != 0:
            problem(f"{file}: {show(a)} does not route to {want}: {run.stdout.strip()} {run.stderr.strip()}")
    print(f"== {file}: {len(seen)} distinct alerts route to the receiver of their severity")

# --- 4. the e-mail example keeps the same policy ---------------------------------------------
main, example = am_configs["alertmanager.yml"], am_configs["email-example.yml"]
if main.get("inhibit_rules") != example.get("inhibit_rules"):
    problem("email-example.yml's inhibit_rules differ from alertmanager.yml's")


def strip_receivers(route, prefix):
    route = dict(route)
    route["receiver"] = route.get("receiver", "").removeprefix(prefix)
    route["routes"] = [strip_receivers(r, prefix) for r in route.get("routes", [])]
    return route


if strip_receivers(main["route"], "opsgenie-") != strip_receivers(example["route"], "email-"):
    problem("email-example.yml's route differs from alertmanager.yml's (beyond receiver names)")

if problems:
    for p in problems:
        print("PROBLEM:", p)
    sys.exit(1)
print(f"OK: {sum(len(r) for s in SIDES.values() for r in s['rules'].values())} alert rules tested, "
      f"{len(main.get('inhibit_rules', []))} inhibit rules fit the alerts")
