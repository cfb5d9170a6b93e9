//! The monitoring configuration in `deploy/` (docs/monitoring.md), checked with the real
//! tools: promtool (Debian package `prometheus`), amtool (`prometheus-alertmanager`) and
//! python3 with PyYAML (`python3-yaml`). A missing tool fails the test and names its package.
//! Nothing is written outside one temporary directory per test, removed at the end.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};

    /// A scratch directory of its own, removed when dropped (even when the test panics).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "fieldnet-monitoring-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn deploy() -> PathBuf {
        crate::util::root().join("deploy")
    }

    /// `program`, or a failure naming the Debian package that has it.
    fn tool(program: &str, package: &str) -> Command {
        assert!(
            crate::util::have(program),
            "{program} is not installed: apt-get install {package}"
        );
        let mut command = Command::new(program);
        command.current_dir(crate::util::root());
        command
    }

    fn promtool() -> Command {
        tool("promtool", "prometheus")
    }

    fn amtool() -> Command {
        tool("amtool", "prometheus-alertmanager")
    }

    fn python3() -> Command {
        let mut probe = tool("python3", "python3");
        let has_yaml = probe
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            has_yaml,
            "python3 cannot import yaml: apt-get install python3-yaml"
        );
        tool("python3", "python3")
    }

    /// Runs `command`; fails the test with its output unless it exits 0.
    fn run(command: &mut Command) -> Output {
        let shown = format!("{command:?}");
        let output = command
            .output()
            .unwrap_or_else(|error| panic!("{shown}: {error}"));
        assert!(
            output.status.success(),
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The files in `dir` whose names end with `suffix`, sorted; at least one.
    fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file() && path.to_string_lossy().ends_with(suffix))
            .collect();
        found.sort();
        assert!(!found.is_empty(), "no *{suffix} file in {}", dir.display());
        found
    }

    const ALERTMANAGER_FILES: &[(&str, &str)] = &[
        ("alertmanager.yml", "opsgenie-"),
        ("email-example.yml", "email-"),
    ];

    /// Both Prometheus configurations load, with the rule files they name (relative to the
    /// configuration's directory, so they check from the repository as they are).
    #[test]
    fn prometheus_configurations_check() {
        for name in ["appliance.yml", "hub.yml"] {
            let config = deploy().join("prometheus").join(name);
            let output = run(promtool().args(["check", "config"]).arg(config.as_os_str()));
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                text.contains("rule files found") && !text.contains(" 0 rule files found"),
                "{name} loads no rule file:\n{text}"
            );
        }
    }

    #[test]
    fn rule_files_check() {
        let rules = deploy().join("prometheus/rules");
        for file in files(&rules, ".yml")
            .into_iter()
            .chain(files(&rules.join("hub"), ".yml"))
        {
            run(promtool().args(["check", "rules"]).arg(file.as_os_str()));
        }
    }

    /// Every rule's unit tests, among them the 4G uplink flapping for an hour (one alert) and
    /// the site cut off for 20 minutes (one alert).
    #[test]
    fn rule_unit_tests_pass() {
        for file in files(&deploy().join("prometheus/tests"), "_test.yml") {
            run(promtool().args(["test", "rules"]).arg(file.as_os_str()));
        }
    }

    /// Every alert rule is tested firing and quiet, and every inhibit rule matches alerts the
    /// rules produce and compares labels those alerts carry (amtool cannot test inhibitions).
    #[test]
    fn alerts_are_tested_and_inhibitions_fit_them() {
        let script = deploy().join("prometheus/check_alerts.py");
        assert!(
            crate::util::have("amtool"),
            "amtool is not installed: apt-get install prometheus-alertmanager"
        );
        let output = run(python3().arg(script.as_os_str()));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("OK:"), "{text}");
    }

    #[test]
    fn alertmanager_configurations_check() {
        for (name, _) in ALERTMANAGER_FILES {
            let config = deploy().join("alertmanager").join(name);
            run(amtool().arg("check-config").arg(config.as_os_str()));
        }
    }

    /// Each severity reaches its own receiver; an alert without one gets the warning receiver.
    #[test]
    fn alerts_route_by_severity() {
        for (name, prefix) in ALERTMANAGER_FILES {
            let config = deploy().join("alertmanager").join(name);
            for severity in ["critical", "warning", "info", ""] {
                let receiver = format!(
                    "{prefix}{}",
                    if severity.is_empty() {
                        "warning"
                    } else {
                        severity
                    }
                );
                let mut command = amtool();
                command
                    .args(["config", "routes", "test"])
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!("--verify.receivers={receiver}"))
                    .args(["alertname=FieldnetUplinkDown", "site=riverside"]);
                if !severity.is_empty() {
                    command.arg(format!("severity={severity}"));
                }
                let output = run(&mut command);
                assert_eq!(
                    String::from_utf8_lossy(&output.stdout).trim(),
                    receiver,
                    "{name}: severity {severity:?}"
                );
            }
        }
    }

    /// The notification text renders a group as a person on call reads it.
    #[test]
    fn notification_template_renders() {
        let scratch = Scratch::new("template");
        let data = scratch.0.join("group.json");
        std::fs::write(&data, SAMPLE_GROUP).unwrap();
        let templates = deploy().join("alertmanager/templates/*.tmpl");
        let output = run(amtool()
            .args(["template", "render"])
            .arg(format!("--template.glob={}", templates.display()))
            .arg(format!("--template.data={}", data.display()))
            .arg("--template.text={{ template \"fieldnet.title\" . }}\n{{ template \"fieldnet.text\" . }}"));
        let text = String::from_utf8_lossy(&output.stdout);
        for line in [
            "[FIRING 1] riverside: Appliance 2 answers on no path",
            "FIRING (critical): Appliance 2 answers on no path",
            "Where: site riverside, seen by appliance north",
            "Go to appliance 2.",
            "RESOLVED: Uplink north-4g-a is down or flapping",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    }

    const SAMPLE_GROUP: &str = r#"{
  "receiver": "opsgenie-critical",
  "status": "firing",
  "alerts": [
    {"status": "firing",
     "labels": {"alertname": "FieldnetPeerApplianceDead", "severity": "critical", "site": "riverside",
                "peer": "2", "appliance_id": "2", "reported_by": "north"},
     "annotations": {"summary": "Appliance 2 answers on no path", "description": "Go to appliance 2."},
     "startsAt": "2026-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"},
    {"status": "resolved",
     "labels": {"alertname": "FieldnetUplinkDown", "severity": "warning", "site": "riverside",
                "appliance": "north", "uplink": "north-4g-a"},
     "annotations": {"summary": "Uplink north-4g-a is down or flapping", "description": ""},
     "startsAt": "2026-05-01T09:00:00Z", "endsAt": "2026-05-01T09:30:00Z"}
  ],
  "groupLabels": {"site": "riverside", "alertname": "FieldnetPeerApplianceDead"},
  "commonLabels": {"site": "riverside"},
  "commonAnnotations": {},
  "externalURL": "http://10.253.0.254:9093"
}"#;

    /// The dashboards are what their generator writes, and every panel's and variable's
    /// PromQL parses (promtool check rules, Grafana's variables replaced by sample values).
    #[test]
    fn dashboards_are_generated_and_their_queries_parse() {
        let scratch = Scratch::new("dashboards");
        let script = deploy().join("grafana/dashboards.py");
        assert!(
            crate::util::have("promtool"),
            "promtool is not installed: apt-get install prometheus"
        );
        let output = run(python3()
            .arg(script.as_os_str())
            .arg("check")
            .arg(scratch.0.as_os_str()));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("OK:"), "{text}");
    }

    /// The UPS hook turns `upsc` output into metrics node_exporter accepts: a UPS on battery,
    /// and one that does not answer.
    #[test]
    fn ups_hook_writes_valid_metrics() {
        let scratch = Scratch::new("ups");
        let upsc = scratch.0.join("upsc");
        std::fs::write(
            &upsc,
            "#!/bin/sh\n\
             case \"$1\" in\n\
             -l) echo eaton; echo gone ;;\n\
             eaton) printf 'battery.charge: 87\\nbattery.runtime: 1260\\nups.load: 23\\nups.status: OB DISCHRG\\n' ;;\n\
             *) echo 'Error: Driver not connected' >&2; exit 1 ;;\n\
             esac\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&upsc, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        run(tool("sh", "dash")
            .arg(deploy().join("ups/fieldnet-ups-textfile").as_os_str())
            .env("TEXTFILE_DIR", scratch.0.as_os_str())
            .env("UPSC", upsc.as_os_str()));
        let written = scratch.0.join("fieldnet_ups.prom");
        let text = std::fs::read_to_string(&written).unwrap();
        for line in [
            "fieldnet_ups_up{ups=\"eaton\"} 1",
            "fieldnet_ups_up{ups=\"gone\"} 0",
            "fieldnet_ups_on_battery{ups=\"eaton\"} 1",
            "fieldnet_ups_low_battery{ups=\"eaton\"} 0",
            "fieldnet_ups_battery_runtime_seconds{ups=\"eaton\"} 1260",
            "fieldnet_ups_battery_charge_ratio{ups=\"eaton\"} 0.87",
            "fieldnet_ups_load_ratio{ups=\"eaton\"} 0.23",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        run(promtool()
            .args(["check", "metrics"])
            .stdin(Stdio::from(std::fs::File::open(written.as_path()).unwrap())));
    }
}
