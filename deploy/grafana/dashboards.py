#!/usr/bin/env python3
"""The fieldnet Grafana dashboards: this script writes them, and checks them.

    python3 deploy/grafana/dashboards.py            # (re)write deploy/grafana/*.json
    python3 deploy/grafana/dashboards.py check DIR  # check the committed JSON (DIR: scratch)

The JSON files are committed; edit this script, not them, and run it. `check` fails when a
committed file differs from what this script writes, and runs every panel's and variable's
PromQL through `promtool check rules` (Grafana's variables replaced by sample values first),
writing its scratch rule file in DIR (Debian package for promtool: prometheus).

Every dashboard takes its data source as the input DS_PROMETHEUS (chosen on import) and has
the variables `site` and `appliance`. They read the hub's central Prometheus, where every
series carries `site` and `appliance` (deploy/prometheus/hub.yml); "All" is `.*`, which also
matches series without those labels, so the dashboards work on an appliance's own
Prometheus too. Metric names are the agents' own (crates/*/src/**/metrics.rs, server.rs) and
the UPS hook's (deploy/ups/fieldnet-ups-textfile).
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
S = 'site=~"$site", appliance=~"$appliance"'
AGENTS = "fieldnet-bus|uplink-monitor|cross-site-failover|whereami|dhcp-takeover|imds-endpoint|inventory|node"


def sel(extra=""):
    """The dashboard's label selector, with one more matcher written without quotes
    (`job=prometheus`, `path=~cable|wifi`)."""
    if not extra:
        return "{" + S + "}"
    name, op, value = re.fullmatch(r"(\w+)(=~|!~|!=|=)(.*)", extra).groups()
    return "{" + S + f', {name}{op}"{value}"' + "}"


UP_DOWN = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red", "index": 0},
    "1": {"text": "up", "color": "green", "index": 1},
}}]


def panel(title, exprs, kind="timeseries", unit=None, description="", w=12, h=8,
          mappings=None, thresholds=None, minimum=None, maximum=None):
    """One panel; `exprs` is a list of (expr, legend)."""
    defaults = {}
    if unit:
        defaults["unit"] = unit
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if mappings:
        defaults["mappings"] = mappings
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    options = {}
    if kind == "timeseries":
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "none"}}
    elif kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    elif kind == "state-timeline":
        options = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
                   "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False}}
    elif kind == "table":
        options = {"showHeader": True}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
             **({"instant": True, "format": "table"} if kind == "table" else {})}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def rate(metric, by, extra="", window="$__rate_interval"):
    return f"sum by ({by}) (rate({metric}{sel(extra)}[{window}]))"


def increase(metric, by, extra=""):
    return f"sum by ({by}) (increase({metric}{sel(extra)}[$__rate_interval]))"


def variables():
    return {"list": [
        {
            "name": "site", "label": "Site", "type": "query", "datasource": DS,
            "query": {"query": 'label_values(up{job="prometheus"}, site)', "refId": "site"},
            "definition": 'label_values(up{job="prometheus"}, site)',
            "refresh": 2, "includeAll": True, "allValue": ".*", "multi": False, "sort": 1,
            "current": {},
        },
        {
            "name": "appliance", "label": "Appliance", "type": "query", "datasource": DS,
            "query": {"query": 'label_values(up{job="prometheus", site=~"$site"}, appliance)',
                      "refId": "appliance"},
            "definition": 'label_values(up{job="prometheus", site=~"$site"}, appliance)',
            "refresh": 2, "includeAll": True, "allValue": ".*", "multi": True, "sort": 1,
            "current": {},
        },
    ]}


def dashboard(uid, title, description, panels):
    x = y = row_h = 0
    for i, p in enumerate(panels, 1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_h = max(row_h, h)
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "The hub's central Prometheus",
                      "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fieldnet"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "schemaVersion": 37,
        "version": 1,
        "links": [{"type": "dashboards", "tags": ["fieldnet"], "asDropdown": True, "title": "fieldnet",
                   "includeVars": True, "keepTime": True}],
        "annotations": {"list": []},
        "templating": variables(),
        "panels": panels,
    }


def site_overview():
    return dashboard("fieldnet-site", "fieldnet / Site overview",
                     "One site at a glance: who reports, what fires, agents, uplinks, peers, power.", [
        panel("Appliances reporting", [(f'count by (site) (up{sel("job=prometheus")})', "{{site}}")],
              kind="stat", w=6, h=4, description="Appliances whose data reaches this Prometheus now."),
        panel("Alerts firing", [(f'count(ALERTS{sel("alertstate=firing")}) or vector(0)', "firing")],
              kind="stat", w=6, h=4, thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
        panel("Devices present", [(f'sum(fieldnet_inventory_devices{sel("state=present")})', "devices")],
              kind="stat", w=6, h=4),
        panel("Shortest credential runway", [(f'min(fieldnet_imds_endpoint_runway_seconds{sel("class!=all")})', "runway")],
              kind="stat", unit="s", w=6, h=4,
              thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 3600},
                          {"color": "green", "value": 10800}]),
        panel("Alerts firing, by name", [(f'count by (alertname, severity) (ALERTS{sel("alertstate=firing")})',
                                          "{{severity}} {{alertname}}")], minimum=0),
        panel("Agents", [(f'up{sel("job=~" + AGENTS)}', "{{appliance}} {{job}}")],
              kind="state-timeline", mappings=UP_DOWN,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        panel("Uplink carrying traffic", [(f'fieldnet_uplink_monitor_active{sel()} == 1', "{{appliance}}: {{uplink}}")],
              kind="state-timeline", description="Which uplink each appliance's default route uses."),
        panel("Uplinks answering", [(f'sum by (site, appliance) (fieldnet_uplink_monitor_up{sel()})', "{{appliance}}")],
              minimum=0, description="How many of the uplinks each appliance can use answer probes."),
        panel("Peers alive", [(f'fieldnet_cross_site_peer_alive{sel("peer=~[0-9]+")}', "{{appliance}} sees {{peer}}")],
              kind="state-timeline", mappings=UP_DOWN,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        panel("UPS", [(f'fieldnet_ups_battery_runtime_seconds{sel()}', "{{appliance}} {{ups}} runtime"),
                      (f'fieldnet_ups_on_battery{sel()} * 600', "{{appliance}} {{ups}} on battery (bar)")],
              unit="s", minimum=0, description="Battery time left; the bar is up while on battery."),
        panel("DHCP leases", [(f'sum by (appliance, network) (fieldnet_dhcp_takeover_leases{sel()})', "{{appliance}} {{network}}")],
              minimum=0),
        panel("DNS queries", [(rate("fieldnet_whereami_queries_total", "appliance"), "{{appliance}}")], unit="reqps", minimum=0),
        panel("Hub behind (remote write)", [(
            f'prometheus_remote_storage_highest_timestamp_in_seconds{sel()} - ignoring (remote_name, url) group_right '
            f'prometheus_remote_storage_queue_highest_sent_timestamp_seconds{sel()}', "{{appliance}}")],
            unit="s", minimum=0,
            description="How far the data at the hub lags the appliance: grows during an outage, "
                        "falls while the backlog is sent. Read it on the appliance's own Prometheus "
                        "while the site is cut off."),
    ])


def uplinks():
    return dashboard("fieldnet-uplinks", "fieldnet / Uplinks",
                     "uplink-monitor: every uplink each appliance can use, probed all the time.", [
        panel("Answering probes", [(f'fieldnet_uplink_monitor_up{sel()}', "{{appliance}} {{uplink}}")],
              kind="state-timeline", mappings=UP_DOWN,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}], w=24),
        panel("Carrying traffic", [(f'fieldnet_uplink_monitor_active{sel()} == 1', "{{appliance}}: {{uplink}}")],
              kind="state-timeline", w=24),
        panel("Latency (smoothed)", [(f'fieldnet_uplink_monitor_latency_milliseconds{sel()}', "{{appliance}} {{uplink}}")],
              unit="ms", minimum=0),
        panel("Jitter", [(f'fieldnet_uplink_monitor_jitter_milliseconds{sel()}', "{{appliance}} {{uplink}}")],
              unit="ms", minimum=0),
        panel("Loss (recent)", [(f'fieldnet_uplink_monitor_loss_ratio{sel()}', "{{appliance}} {{uplink}}")],
              unit="percentunit", minimum=0, maximum=1),
        panel("Probes lost", [(
            f'sum by (appliance, uplink) (rate(fieldnet_uplink_monitor_probes_lost_total{sel()}[$__rate_interval])) '
            f'/ sum by (appliance, uplink) (rate(fieldnet_uplink_monitor_probes_sent_total{sel()}[$__rate_interval]))',
            "{{appliance}} {{uplink}}")], unit="percentunit", minimum=0, maximum=1),
        panel("Score (lower is better)", [(f'fieldnet_uplink_monitor_score{sel()}', "{{appliance}} {{uplink}}")], minimum=0),
        panel("Traffic", [(f'fieldnet_uplink_monitor_throughput_bits_per_second{sel()}', "{{appliance}} {{uplink}} {{direction}}")],
              unit="bps", minimum=0),
        panel("Measured capacity (active test)", [(f'fieldnet_uplink_monitor_capacity_kilobits_per_second{sel()} * 1000',
                                                   "{{appliance}} {{uplink}}")], unit="bps", minimum=0),
        panel("Switches of active uplink", [(increase("fieldnet_uplink_monitor_switches_total", "appliance, reason"),
                                             "{{appliance}} {{reason}}")], minimum=0),
        panel("Since the last switch", [(f'time() - (fieldnet_uplink_monitor_last_switch_timestamp_seconds{sel()} > 0)',
                                         "{{appliance}}")], kind="stat", unit="s", w=6, h=8),
        panel("Failed kernel operations", [(rate("fieldnet_uplink_monitor_errors_total", "appliance, operation"),
                                            "{{appliance}} {{operation}}")], unit="ops", minimum=0, w=18),
    ])


def paths():
    return dashboard("fieldnet-paths", "fieldnet / Paths between areas",
                     "cross-site-failover: cable, wifi and VPN paths to every other area, and the tunnels to the hub.", [
        panel("Paths up", [(f'fieldnet_cross_site_path_up{sel()}', "{{appliance}} to {{peer}} {{path}}")],
              kind="state-timeline", mappings=UP_DOWN,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}], w=24, h=10),
        panel("Round trip", [(f'fieldnet_cross_site_path_rtt_microseconds{sel()} / 1000', "{{appliance}} to {{peer}} {{path}}")],
              unit="ms", minimum=0),
        panel("Peers alive", [(f'fieldnet_cross_site_peer_alive{sel()}', "{{appliance}} sees {{peer}}")],
              kind="state-timeline", mappings=UP_DOWN,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        panel("Traffic to a peer on the VPN", [(
            f'(max by (site, appliance, peer) (fieldnet_cross_site_path_up{sel("path=~cable|wifi")}) == bool 0) '
            f'* on (site, appliance, peer) max by (site, appliance, peer) (fieldnet_cross_site_path_up{sel("path=vpn")})',
            "{{appliance}} to {{peer}}")], minimum=0, maximum=1,
            description="1 while neither cable nor wifi to the peer is up and the VPN path is."),
        panel("Route switches", [(increase("fieldnet_cross_site_switches_total", "appliance, peer, reason"),
                                  "{{appliance}} to {{peer}}: {{reason}}")], minimum=0),
        panel("Heartbeats", [(rate("fieldnet_cross_site_heartbeats_total", "appliance, outcome"), "{{appliance}} {{outcome}}")],
              unit="reqps", minimum=0),
        panel("Tunnels healthy", [(f'fieldnet_cross_site_tunnel_healthy{sel()}', "{{appliance}} {{tunnel}} to {{peer}}")],
              kind="state-timeline", mappings=UP_DOWN,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
              description="On the hub (appliance empty) one per appliance; on an appliance, its tunnel to the hub."),
        panel("WireGuard handshake age", [(f'fieldnet_cross_site_tunnel_handshake_age_seconds{sel()} >= 0',
                                           "{{appliance}} {{tunnel}} to {{peer}}")], unit="s", minimum=0),
        panel("Hub pair", [('fieldnet_cross_site_hub_partner_up{appliance=""}', "partner up"),
                           ('fieldnet_cross_site_route_owner_standby{appliance=""}', "routes on standby")],
              minimum=0, maximum=1, description="The hub's own view (its scrape carries no site or appliance)."),
        panel("AWS calls from the hub", [('sum by (call, outcome) (rate(fieldnet_cross_site_aws_calls_total{appliance=""}[$__rate_interval]))',
                                          "{{call}} {{outcome}}")], unit="reqps", minimum=0),
    ])


def dhcp():
    return dashboard("fieldnet-dhcp", "fieldnet / DHCP",
                     "dhcp-takeover: pools, leases, takeover of dead peers' networks.", [
        panel("Pool used", [(f'(fieldnet_dhcp_takeover_pool_addresses{sel("state=used")} / ignoring (state) '
                             f'(fieldnet_dhcp_takeover_pool_addresses{sel("state=total")} > 0)) '
                             f'and on (site, appliance, network) fieldnet_dhcp_takeover_serving{sel("state=~own|taken")} == 1',
                             "{{appliance}} {{network}}")], unit="percentunit", minimum=0, maximum=1,
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.9}],
              description="Leases, offers and quarantined addresses over the dynamic pool, for the "
                          "networks each appliance serves now; 90 % alerts."),
        panel("Leases by class", [(f'sum by (appliance, network, class) (fieldnet_dhcp_takeover_leases{sel()})',
                                   "{{appliance}} {{network}} {{class}}")], minimum=0),
        panel("Who serves what", [(f'fieldnet_dhcp_takeover_serving{sel()} == 1', "{{appliance}} {{network}}: {{state}}")],
              kind="state-timeline", w=24,
              description="own, waiting (held by a peer), taken (serving for a dead peer), handing_back, adopted, standby."),
        panel("Messages received", [(rate("fieldnet_dhcp_takeover_messages_total", "appliance, type"), "{{appliance}} {{type}}")],
              unit="reqps", minimum=0),
        panel("Replies sent", [(rate("fieldnet_dhcp_takeover_replies_total", "appliance, type"), "{{appliance}} {{type}}")],
              unit="reqps", minimum=0),
        panel("Requests ignored", [(rate("fieldnet_dhcp_takeover_ignored_total", "appliance, reason"), "{{appliance}} {{reason}}")],
              unit="reqps", minimum=0),
        panel("Conflict probes", [(rate("fieldnet_dhcp_takeover_probes_total", "appliance, result"), "{{appliance}} {{result}}")],
              unit="reqps", minimum=0),
        panel("Lease store commit (p99)", [(
            f'histogram_quantile(0.99, sum by (appliance, le) (rate(fieldnet_dhcp_takeover_commit_seconds_bucket{sel()}[$__rate_interval])))',
            "{{appliance}}")], unit="s", minimum=0),
        panel("Lease store failures", [(increase("fieldnet_dhcp_takeover_commit_failures_total", "appliance"), "{{appliance}}")],
              minimum=0),
        panel("Lease sync with peers", [(rate("fieldnet_dhcp_takeover_peer_syncs_total", "appliance, peer, result"),
                                         "{{appliance}} from {{peer}} {{result}}")], unit="reqps", minimum=0),
        panel("Takeover transitions", [(increase("fieldnet_dhcp_takeover_transitions_total", "appliance, network, action"),
                                        "{{appliance}} {{network}} {{action}}")], minimum=0),
    ])


def dns():
    return dashboard("fieldnet-dns", "fieldnet / DNS",
                     "whereami: the area's DNS, its upstreams and cache.", [
        panel("Queries by result", [(rate("fieldnet_whereami_queries_total", "appliance, result"), "{{appliance}} {{result}}")],
              unit="reqps", minimum=0),
        panel("Queries by network", [(rate("fieldnet_whereami_queries_total", "appliance, view"), "{{appliance}} {{view}}")],
              unit="reqps", minimum=0),
        panel("Upstream questions failing", [(
            f'sum by (appliance) (rate(fieldnet_whereami_upstream_failures_total{sel()}[$__rate_interval])) '
            f'/ sum by (appliance) (rate(fieldnet_whereami_upstream_seconds_count{sel()}[$__rate_interval]))',
            "{{appliance}}")], unit="percentunit", minimum=0, maximum=1,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.5}]),
        panel("Upstream latency", [
            (f'histogram_quantile(0.5, sum by (appliance, le) (rate(fieldnet_whereami_upstream_seconds_bucket{sel()}[$__rate_interval])))',
             "{{appliance}} p50"),
            (f'histogram_quantile(0.95, sum by (appliance, le) (rate(fieldnet_whereami_upstream_seconds_bucket{sel()}[$__rate_interval])))',
             "{{appliance}} p95")], unit="s", minimum=0),
        panel("Cache", [(
            f'sum by (appliance) (rate(fieldnet_whereami_cache_hits_total{sel()}[$__rate_interval])) '
            f'/ (sum by (appliance) (rate(fieldnet_whereami_cache_hits_total{sel()}[$__rate_interval])) '
            f'+ sum by (appliance) (rate(fieldnet_whereami_upstream_seconds_count{sel()}[$__rate_interval])))',
            "{{appliance}} forwarded questions from cache")], unit="percentunit", minimum=0, maximum=1),
        panel("Answer cache hits", [(rate("fieldnet_whereami_answer_cache_hits_total", "appliance"), "{{appliance}}")],
              unit="reqps", minimum=0),
        panel("DNS over TCP", [(f'fieldnet_whereami_tcp_connections{sel()}', "{{appliance}} open"),
                               (rate("fieldnet_whereami_tcp_refused_total", "appliance, reason"), "{{appliance}} refused/s {{reason}}")],
              minimum=0),
        panel("Forged queries dropped", [(rate("fieldnet_whereami_spoofed_total", "appliance"), "{{appliance}}")],
              unit="reqps", minimum=0,
              description="Queries from a site address that arrived on an uplink."),
    ])


def credentials():
    return dashboard("fieldnet-credentials", "fieldnet / Device credentials",
                     "imds-endpoint: AWS credentials for the devices, and how long they last without STS.", [
        panel("Runway by class", [(f'fieldnet_imds_endpoint_runway_seconds{sel("class!=all")}', "{{appliance}} {{class}}")],
              unit="s", minimum=0, w=24,
              thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 3600},
                          {"color": "green", "value": 10800}],
              description="How long devices stay served if STS stays away; falls only while STS does not answer."),
        panel("STS calls", [(rate("fieldnet_imds_endpoint_sts_calls_total", "appliance, result"), "{{appliance}} {{result}}")],
              unit="reqps", minimum=0),
        panel("Requests by outcome", [(rate("fieldnet_imds_endpoint_requests_total", "appliance, outcome"), "{{appliance}} {{outcome}}")],
              unit="reqps", minimum=0),
        panel("Askers refused", [(rate("fieldnet_imds_endpoint_refused_total", "appliance, reason"), "{{appliance}} {{reason}}"),
                                 (rate("fieldnet_imds_endpoint_connections_refused_total", "appliance"), "{{appliance}} connection limits")],
              unit="reqps", minimum=0),
        panel("Devices and tokens", [(f'fieldnet_imds_endpoint_devices{sel()}', "{{appliance}} devices with a session"),
                                     (f'fieldnet_imds_endpoint_tokens{sel()}', "{{appliance}} live tokens")], minimum=0),
    ])


def devices():
    return dashboard("fieldnet-devices", "fieldnet / Devices",
                     "inventory: the devices found on every network, and their node_exporters.", [
        panel("Devices present", [(f'sum by (appliance, network, class) (fieldnet_inventory_devices{sel("state=present")})',
                                   "{{appliance}} {{network}} {{class}}")], minimum=0),
        panel("Devices gone (kept until forgotten)", [(f'sum by (appliance, network, class) (fieldnet_inventory_devices{sel("state=gone")})',
                                                      "{{appliance}} {{network}} {{class}}")], minimum=0),
        panel("Device events", [(increase("fieldnet_inventory_device_events_total", "appliance, event"), "{{appliance}} {{event}}")],
              minimum=0, description="joined, moved, gone, returned."),
        panel("Sweep time", [(f'fieldnet_inventory_sweep_seconds{sel()}', "{{appliance}} {{network}}")], unit="s", minimum=0),
        panel("Found by the last sweep", [(f'fieldnet_inventory_sweep_found{sel()}', "{{appliance}} {{network}}")], minimum=0),
        panel("Frames sent", [(rate("fieldnet_inventory_frames_sent_total", "appliance, kind"), "{{appliance}} {{kind}}")],
              unit="pps", minimum=0),
        panel("Service discovery requests", [(rate("fieldnet_inventory_sd_requests_total", "appliance, job"), "{{appliance}} {{job}}")],
              unit="reqps", minimum=0),
        panel("Device exporters answering", [(f'sum by (appliance, network) (up{sel("job=device-node")})', "{{appliance}} {{network}} up"),
                                             (f'count by (appliance, network) (up{sel("job=device-node")})', "{{appliance}} {{network}} known")],
              minimum=0),
        panel("Device exporters not answering", [(f'up{sel("job=device-node")} == 0', "")],
              kind="table", w=24),
    ])


DASHBOARDS = {
    "site-overview.json": site_overview,
    "uplinks.json": uplinks,
    "paths.json": paths,
    "dhcp.json": dhcp,
    "dns.json": dns,
    "credentials.json": credentials,
    "devices.json": devices,
}


def render(build):
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


# --- check ----------------------------------------------------------------------------------

SAMPLE = {"site": "riverside", "appliance": "north", "__rate_interval": "1m", "__interval": "1m",
          "__range": "1h"}


def substitute(expr):
    """Grafana's variables, replaced by sample values; an unknown one is an error."""
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in SAMPLE:
            raise ValueError(f"unknown variable ${name}")
        return SAMPLE[name]
    return re.sub(r"\$\{(\w+)\}|\$(?!\d)(\w+)", one, expr)


def exprs_of(dashboard):
    """(where, PromQL) of every panel target and every variable query."""
    for p in dashboard.get("panels", []):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield f'panel "{p["title"]}" {t.get("refId")}', t["expr"]
    for v in dashboard.get("templating", {}).get("list", []):
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query or "")
        yield f'variable "{v["name"]}"', m.group(1) if m else query


def check(scratch):
    problems = []
    rules = []
    for name, build in DASHBOARDS.items():
        path = os.path.join(HERE, name)
        try:
            with open(path, encoding="utf-8") as f:
                committed = f.read()
        except FileNotFoundError:
            problems.append(f"{name} is missing: run python3 deploy/grafana/dashboards.py")
            continue
        if committed != render(build):
            problems.append(f"{name} differs from what dashboards.py writes: run python3 deploy/grafana/dashboards.py")
        board = json.loads(committed)
        if board.get("__inputs", [{}])[0].get("name") != "DS_PROMETHEUS":
            problems.append(f"{name}: no DS_PROMETHEUS input")
        names = {v["name"] for v in board.get("templating", {}).get("list", [])}
        if not {"site", "appliance"} <= names:
            problems.append(f"{name}: variables are {sorted(names)}, want site and appliance")
        for where, expr in exprs_of(board):
            try:
                rules.append((f"{name} {where}", substitute(expr)))
            except ValueError as e:
                problems.append(f"{name} {where}: {e}")
    # One rule file, one recording rule per expression; promtool names the failing one.
    os.makedirs(scratch, exist_ok=True)
    rule_file = os.path.join(scratch, "dashboard_exprs.yml")
    with open(rule_file, "w", encoding="utf-8") as f:
        f.write("groups:\n  - name: dashboards\n    rules:\n")
        for i, (where, expr) in enumerate(rules):
            f.write(f"      # {where}\n      - record: dashboard_expr_{i}\n        expr: {json.dumps(expr)}\n")
    try:
        run = subprocess.run(["promtool", "check", "rules", rule_file], capture_output=True, text=True)
    except FileNotFoundError:
        problems.append("promtool is not installed (Debian package: prometheus)")
    else:
        if run.returncode != 0:
            text = run.stdout + run.stderr
            # Point at the dashboard and panel of each failing record.
            for m in re.finditer(r"dashboard_expr_(\d+)", text):
                problems.append(f"{rules[int(m.group(1))][0]}: {rules[int(m.group(1))][1]}")
            problems.append("promtool check rules failed:\n" + text)
    for p in problems:
        print("PROBLEM:", p)
    if problems:
        return 1
    print(f"OK: {len(DASHBOARDS)} dashboards as generated, {len(rules)} expressions parse (promtool check rules)")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    for name, build in DASHBOARDS.items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(render(build))
    print(f"wrote {len(DASHBOARDS)} dashboards in {HERE}")


if __name__ == "__main__":
    main()
