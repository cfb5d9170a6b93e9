//! `fieldctl`: the operator's command. Wiring only; each subcommand lives in its own module.

mod devices;
mod events;
mod leases;
mod site;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fieldnet::cli::{EXIT_CONFIG, exit_code};
use fieldnet::config::{APPLIANCE_ENV, DEFAULT_BUS_SOCKET, DEFAULT_PATH, SiteConfig, load_machine};

/// Look at and poke a fieldnet appliance.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The site file, the same on every appliance and hub.
    #[arg(long, global = true, env = "FIELDNET_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Which entry of the site file this machine is (name, host name or id); by default the one
    /// named after this machine's host name.
    #[arg(long, global = true, env = APPLIANCE_ENV)]
    appliance: Option<String>,
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
    /// The devices inventory found on this appliance's networks, from the bus.
    Devices {
        /// Gone devices too (listed until forgotten).
        #[arg(long)]
        all: bool,
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
    /// Devices: `fieldctl device forget MAC` stops a lost device getting AWS credentials.
    Device {
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// Check the whole site file: exit 0 when valid, 64 with `file:line: key: message` for each
    /// problem when not.
    CheckConfig,
    /// What each appliance and hub will do with the site file, in plain words: networks,
    /// uplinks, paths to each other area, and who takes over whose network.
    Site,
}

#[derive(Debug, Subcommand)]
enum DeviceAction {
    /// Stop serving AWS credentials to the device with this MAC at once (lost or stolen);
    /// docs/imds.md says how to deny the sessions it was already given.
    Forget {
        /// Its hardware address, e.g. 02:00:5e:10:00:01.
        mac: String,
        /// Serve it again.
        #[arg(long)]
        undo: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::CheckConfig => return check_config(&args.config),
        Command::Site => {
            return match SiteConfig::load(&args.config) {
                Ok(site) => {
                    print!("{}", site::describe(&site));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        _ => {}
    }
    // Looking at a broken appliance must still work: without a config, use the default socket.
    let machine = load_machine(&args.config, args.appliance.as_deref())
        .ok()
        .map(|(machine, _)| machine);
    let config = machine.as_ref().map(|machine| &machine.config);
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
            Command::Status { json } => status::run(&socket, machine.as_ref(), json).await,
            Command::Leases { network, json } => {
                exit_code(leases::run(&socket, network.as_deref(), json).await)
            }
            Command::Devices { all, json } => exit_code(devices::run(&socket, all, json).await),
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
            Command::Device {
                action: DeviceAction::Forget { mac, undo },
            } => exit_code(forget(&socket, &mac, undo).await),
            Command::CheckConfig | Command::Site => unreachable!("handled above"),
        }
    })
}

/// The whole site checked; on success one line saying what it holds.
fn check_config(path: &std::path::Path) -> ExitCode {
    match SiteConfig::load(path) {
        Ok(site) => {
            let names = |machines: Vec<&fieldnet::config::Machine>| {
                machines
                    .iter()
                    .map(|m| m.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let appliances: Vec<_> = site.appliances().collect();
            let hubs: Vec<_> = site.hubs().collect();
            let networks = site
                .machines
                .first()
                .map_or(0, |machine| machine.config.networks.len());
            println!(
                "{}: ok: {} appliances ({}), {} hubs{}, {networks} networks",
                path.display(),
                appliances.len(),
                names(appliances.clone()),
                hubs.len(),
                if hubs.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names(hubs.clone()))
                },
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Publishes (or, with `undo`, clears) the retained `imds/forget/<mac>`.
async fn forget(socket: &std::path::Path, mac: &str, undo: bool) -> anyhow::Result<()> {
    let bytes = fieldnet::names::parse_hex_bytes(mac)
        .filter(|bytes| bytes.len() == 6)
        .ok_or_else(|| anyhow::anyhow!("'{mac}' is not a MAC address such as 02:00:5e:10:00:01"))?;
    let mac: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let topic = fieldnet::bus::topics::imds_forget_topic(&mac.join(":"));
    let body = if undo {
        "null".to_owned()
    } else {
        serde_json::to_string(&fieldnet::bus::topics::DeviceForgotten {
            since: fieldnet::bus::unix_millis(),
        })?
    };
    publish(socket, &topic, &body, true).await?;
    if undo {
        println!("{}: served again (if its class has a role)", mac.join(":"));
    } else {
        println!(
            "{0}: no longer given AWS credentials. Sessions it already holds last until they expire: \
             deny them in IAM with the condition sts:SourceIdentity = {1} (docs/imds.md).",
            mac.join(":"),
            mac.join("-")
        );
    }
    Ok(())
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
