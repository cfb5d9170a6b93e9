//! The flags every fieldnet binary shares, and the exit codes they map errors to.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_PATH, LoadError};

/// Exit code for a usage or configuration error (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure at run time.
pub const EXIT_RUNTIME: u8 = 1;

/// `--config` and `--check-config`, flattened into each binary's clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The appliance configuration file.
    #[arg(long, env = "FIELDNET_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration, print the result, and exit (0 valid, 64 invalid).
    #[arg(long)]
    pub check_config: bool,
}

impl CommonArgs {
    /// Loads the config; on `--check-config` reports and returns the exit code to stop with.
    pub fn load(&self) -> Result<Config, ExitCode> {
        match Config::load(&self.config) {
            Ok(config) => {
                if self.check_config {
                    println!("{}: ok", self.config.display());
                    return Err(ExitCode::SUCCESS);
                }
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
