//! Any text as a site file: loading never panics. A valid site gives every machine a view that
//! `select` finds again by its own name and by its id; an invalid one names at least one
//! problem, each with a line inside the text.
#![no_main]

use fieldnet::config::SiteConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SiteConfig::from_str(text, "fuzz.toml") {
        Ok(site) => {
            for machine in &site.machines {
                let by_name = site
                    .select(Some(machine.name()), None)
                    .expect("found by name");
                assert_eq!(by_name.machine.id(), machine.id());
                // Names are never digits alone, so an id names one entry only.
                let by_id = site
                    .select(Some(&machine.id().to_string()), None)
                    .expect("found by id");
                assert_eq!(by_id.machine.id(), machine.id());
            }
        }
        Err(error) => {
            assert!(!error.problems.is_empty());
            let lines = text.lines().count().max(1);
            for problem in &error.problems {
                assert!(
                    problem.line >= 1 && problem.line <= lines + 1,
                    "line {} of {lines}: {problem:?}",
                    problem.line
                );
            }
            let _ = error.to_string();
        }
    }
});
