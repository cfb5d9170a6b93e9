//! The flags every fieldnet binary shares, and the exit codes they map errors to.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{APPLIANCE_ENV, Config, DEFAULT_PATH, LoadError, load_view};

/// Exit code for a usage or configuration error (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure at run time.
pub const EXIT_RUNTIME: u8 = 1;

/// `--config`, `--appliance` and `--check-config`, flattened into each binary's clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The site file, the same on every appliance and hub.
    #[arg(long, env = "FIELDNET_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Which entry of the site file this machine is (its name, host name or id); by default the
    /// one named after this machine's host name.
    #[arg(long, env = APPLIANCE_ENV)]
    pub appliance: Option<String>,
    /// Validate the site file and find this machine in it, print the result, and exit (0
    /// valid, 64 invalid).
    #[arg(long)]
    pub check_config: bool,
}

impl CommonArgs {
    /// Loads this machine's view of the site file, logging which entry it is; on
    /// `--check-config` reports and returns the exit code to stop with.
    pub fn load(&self) -> Result<Config, ExitCode> {
        match load_view(&self.config, self.appliance.as_deref()) {
            Ok((config, chosen)) => {
                // The key is part of the configuration: a missing or exposed key file is a
                // config error (exit 64, which the units do not restart), found by
                // --check-config too.
                if let Err(error) = config.site.key.bytes() {
                    eprintln!("{}: site.key_file: {error:#}", self.config.display());
                    return Err(ExitCode::from(EXIT_CONFIG));
                }
                if self.check_config {
                    println!("{}: ok; this machine is {chosen}", self.config.display());
                    return Err(ExitCode::SUCCESS);
                }
                tracing::info!(file = %self.config.display(), "this machine is {chosen}");
                Ok(config)
            }
            Err(error) => {
                report_config_error(&error);
                Err(ExitCode::from(EXIT_CONFIG))
            }
        }
    }
}

/// Prints a config error the way operators read it: one `file:line: key: message` per line.
pub fn report_config_error(error: &LoadError) {
    eprintln!("{error}");
}

/// Maps a run-time result to the process exit code, logging the error chain.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
