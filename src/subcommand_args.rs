//! The subcommands' own flags (`try`, `connect`, `completions`, `man`),
//! apart from the server's in config.rs: each is read only by its command.

use std::path::PathBuf;

use clap::Args;

use crate::endpoint_settings::EventArg;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The page of this subcommand (ws2http-COMMAND(1)) rather than ws2http(1)
    #[arg(value_name = "COMMAND", conflicts_with = "out_dir")]
    pub command: Option<String>,
    /// Write every page into DIR as NAME.1 instead of printing one
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TryArgs {
    /// The script to run
    pub script: PathBuf,
    /// Which event to simulate
    #[arg(long, value_enum, default_value = "message")]
    pub event: EventArg,
    /// The message payload (message events)
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the message payload from this file
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// Send the payload as a binary message
    #[arg(long)]
    pub binary: bool,
    /// Query string of the upgrade request (without `?`)
    #[arg(long, default_value = "", value_name = "Q")]
    pub query: String,
    /// PATH_INFO, e.g. /lobby
    #[arg(long, default_value = "", value_name = "PATH")]
    pub path_info: String,
    /// Connection metadata (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Rooms the connection is in
    #[arg(long, value_delimiter = ',', value_name = "R1,R2")]
    pub rooms: Vec<String>,
    /// A header of the upgrade request (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Close code (close events)
    #[arg(long, default_value_t = 1000, value_name = "CODE")]
    pub close_code: u16,
    /// Close reason (close events)
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub close_reason: String,
    /// Run scripts with this extension through PROGRAM (repeatable)
    #[arg(long = "handler", value_name = "EXT=PROGRAM")]
    pub handlers: Vec<String>,
    /// Pass this variable on to the script (repeatable)
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Seconds the script may run
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub timeout: f64,
    /// WS_API_URL given to the script
    #[arg(long, default_value = "http://127.0.0.1:8081", value_name = "URL")]
    pub api_url: String,
    /// WS_API_TOKEN given to the script
    #[arg(long, default_value = "", value_name = "TOKEN")]
    pub api_token: String,
}

/// `ws2http connect URL`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH (TLS: verified against the system's CAs plus
    /// SSL_CERT_FILE when set)
    pub url: String,
    /// Send this Origin header, as a browser on that page would
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// An extra request header (repeatable), e.g. -H 'Cookie: sid=1'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Once stdin ends, wait until nothing has arrived for this long before closing
    /// (replies to the last lines still come in)
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub linger: f64,
    /// After our close, how long to wait for the server's close
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub close_timeout: f64,
}
