//! `fieldctl`: the operator's command. Wiring only; each subcommand lives in its own module.

mod events;
mod leases;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fieldnet::cli::{EXIT_CONFIG, exit_code};
use fieldnet::config::{Config, DEFAULT_BUS_SOCKET, DEFAULT_PATH};

/// Look at and poke a fieldnet appliance.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The appliance configuration file.
    #[arg(long, global = true, env = "FIELDNET_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Bus socket, instead of the config's `bus.socket`.
    #[arg(long, global = true, env = "FIELDNET_BUS")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Is the bus up, which agents are alive, and what they report.
    Status {
        /// Print the raw state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The bound DHCP leases this appliance knows (its own and its peers'), from the bus.
    Leases {
        /// Only this network (by name, e.g. NETWORK1).
        #[arg(long)]
        network: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow bus events, one line each (Ctrl-C to stop).
    Events {
        /// Only topics starting with this ("" or absent: everything).
        #[arg(default_value = "")]
        prefix: String,
        /// Print the raw bus envelopes instead.
        #[arg(long)]
        json: bool,
        /// Stop after this many events (for scripts).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Publish one message, e.g. `fieldctl publish site/note '{"text":"hello"}'`.
    Publish {
        topic: String,
        /// The body, as JSON.
        json: String,
        /// Keep it as the topic's current value for later subscribers.
        #[arg(long)]
        retain: bool,
    },
    /// Validate the configuration file: exit 0 when valid, 64 with `file:line: key: message` when not.
    CheckConfig,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::CheckConfig = args.command {
        return match Config::load(&args.config) {
            Ok(_) => {
                println!("{}: ok", args.config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    // Looking at a broken appliance must still work: without a config, use the default socket.
    let config = Config::load(&args.config).ok();
    let socket = args
        .socket
        .clone()
        .or_else(|| config.as_ref().map(|c| c.bus.socket.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BUS_SOCKET));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit_code(Err(error.into())),
    };
    runtime.block_on(async {
        match args.command {
            Command::Status { json } => status::run(&socket, config.as_ref(), json).await,
            Command::Leases { network, json } => {
                exit_code(leases::run(&socket, network.as_deref(), json).await)
            }
            Command::Events {
                prefix,
                json,
                count,
            } => exit_code(events::follow(&socket, &prefix, json, count).await),
            Command::Publish {
                topic,
                json,
                retain,
            } => exit_code(publish(&socket, &topic, &json, retain).await),
            Command::CheckConfig => unreachable!("handled above"),
        }
    })
}

async fn publish(
    socket: &std::path::Path,
    topic: &str,
    json: &str,
    retain: bool,
) -> anyhow::Result<()> {
    use fieldnet::bus::{Envelope, frame};
    frame::check_topic(topic)?;
    let body: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("the body is not valid JSON: {e}"))?;
    let envelope = Envelope {
        v: frame::VERSION,
        topic: topic.to_owned(),
        ts: fieldnet::bus::unix_millis(),
        from: "fieldctl".to_owned(),
        retain,
        body,
    };
    fieldnet::bus::client::publish_once(socket, envelope, Duration::from_secs(5)).await
}
