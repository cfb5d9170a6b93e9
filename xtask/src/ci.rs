//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{cmd, cmd_with, have, is_root, root, step};

pub fn run(fuzz_seconds: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_root(),
        "cargo xtask ci needs root: the lab tests build network namespaces and CI requires them"
    );
    // Every install CI needs happens here, before any test: a step that needs the network
    // later would fail on a machine whose network a test had broken, and hide it.
    step("test peers and tools");
    crate::peers::install_missing_peers()?;
    install_missing_tools()?;

    step("formatting");
    cmd("cargo", &["fmt", "--all", "--", "--check"])?;

    step("clippy, warnings denied");
    cmd(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;

    let host = crate::host::Snapshot::take()?;

    step("tests (the lab is required)");
    let (passed, failed) = run_tests()?;

    step("the demo, fast (`cargo xtask demo --fast`)");
    crate::demo::run(true).context("the demo failed")?;

    step("example configs");
    cmd("cargo", &["build", "--quiet", "--locked", "-p", "fieldctl"])?;
    let fieldctl = root().join("target/debug/fieldctl");
    for example in examples()? {
        cmd_with(
            Command::new(&fieldctl)
                .arg("--config")
                .arg(&example)
                .arg("check-config"),
        )?;
    }

    step(
        "fuzz: bus frames and broker, DNS, DHCP and IMDS request paths, DHCP peer API, inventory's inputs, site file",
    );
    fuzz(fuzz_seconds)?;

    step("the host is as the tests found it");
    host.unchanged()?;
    println!(
        "/etc/resolv.conf, /etc/hosts, the host's interfaces, addresses and routes: unchanged"
    );

    step("lab leftovers");
    let left = lab::clean_stale()?;
    anyhow::ensure!(left.is_empty(), "tests left namespaces behind: {left:?}");
    println!("none");
    // The plain closing line CI readers look for, over every test binary.
    println!("\nci: all checks passed");
    println!("ci: {passed} passed, {failed} failed");
    Ok(())
}

/// Cargo tools CI runs, installed when missing, and every crate the builds need, fetched now.
fn install_missing_tools() -> anyhow::Result<()> {
    if !have("cargo-fuzz") {
        cmd("cargo", &["install", "--locked", "cargo-fuzz"])?;
    }
    cmd("cargo", &["fetch", "--locked"])?;
    cmd(
        "cargo",
        &["fetch", "--locked", "--manifest-path", "fuzz/Cargo.toml"],
    )
}

fn examples() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![root().join("deploy/examples")];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
    }
    found.sort();
    anyhow::ensure!(
        !found.is_empty(),
        "no example configs under deploy/examples"
    );
    Ok(found)
}

/// Every fuzz target, as `fuzz/Cargo.toml` names them.
pub const FUZZ_TARGETS: [&str; 8] = [
    "bus_frame",
    "bus_broker",
    "dns_request",
    "dhcp_request",
    "peer_request",
    "imds_request",
    "inventory_input",
    "site_file",
];

/// libFuzzer needs unstable compiler flags; the stable toolchain accepts them with
/// RUSTC_BOOTSTRAP, which keeps CI on the one toolchain the machine has.
fn fuzz(seconds: u32) -> anyhow::Result<()> {
    // The bus frame decoder and the broker's handling of frames, whereami's request path
    // (parse, decide), dhcp-takeover's (decode, decide, encode) and its peer API's request
    // parsing, and the site file's loader. Each starts from its corpus, kept in the
    // repository (what a run finds is added to it there).
    for target in FUZZ_TARGETS {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let max_time = format!("-max_total_time={seconds}");
        cmd_with(
            Command::new("cargo")
                .args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
                .arg(&corpus)
                .arg(root().join("fuzz/seeds").join(target))
                .args(["--", &max_time, "-max_len=4096"])
                .env("RUSTC_BOOTSTRAP", "1"),
        )?;
    }
    Ok(())
}

/// Runs every test with the lab required, echoing the output and summing the result lines.
fn run_tests() -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead as _;
    let mut child = Command::new("cargo")
        .args(["test", "--workspace", "--locked"])
        .env("FIELDNET_LAB_REQUIRED", "1")
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "cargo test failed ({passed} passed, {failed} failed)"
    );
    anyhow::ensure!(passed > 0, "cargo test ran no test");
    Ok((passed, failed))
}

/// `test result: ok. 16 passed; 0 failed; …` → (16, 0).
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        let before = rest.split(&format!(" {word}")).next()?;
        before
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((count("passed")?, count("failed")?))
}

#[cfg(test)]
mod tests {
    /// Every agent (a crate with a `main.rs`, but the operator's `fieldctl`) has a systemd unit
    /// that starts it from the site file and checks the file first.
    #[test]
    fn every_agent_has_a_unit_running_from_the_site_file() {
        let root = crate::util::root();
        let mut agents = Vec::new();
        for entry in std::fs::read_dir(root.join("crates")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.join("src/main.rs").exists() && name != "fieldctl" {
                agents.push(name);
            }
        }
        assert!(agents.len() >= 5, "{agents:?}");
        for agent in agents {
            let unit = root.join(format!("deploy/systemd/{agent}.service"));
            let text = std::fs::read_to_string(&unit)
                .unwrap_or_else(|_| panic!("{agent} has no unit: {} is missing", unit.display()));
            for line in [
                format!("ExecStart=/usr/bin/{agent} --config /etc/fieldnet/site.toml"),
                format!(
                    "ExecStartPre=/usr/bin/{agent} --config /etc/fieldnet/site.toml --check-config"
                ),
            ] {
                assert!(text.contains(&line), "{}: no `{line}`", unit.display());
            }
        }
    }

    /// The README's table is how a newcomer finds things: every crate and every doc is in it.
    #[test]
    fn the_readme_lists_every_crate_and_doc() {
        let root = crate::util::root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let names = |dir: &str| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        for krate in names("crates") {
            assert!(
                readme.contains(&format!("`crates/{krate}`")),
                "README.md's table lacks crates/{krate}"
            );
        }
        for doc in names("docs").iter().filter(|name| name.ends_with(".md")) {
            assert!(
                readme.contains(&format!("docs/{doc}")),
                "README.md does not link docs/{doc}"
            );
        }
    }

    #[test]
    fn result_lines_are_summed_by_their_counts() {
        let line = "test result: ok. 16 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(super::parse_result_line(line), Some((16, 2)));
        assert_eq!(super::parse_result_line("running 3 tests"), None);
    }
}
