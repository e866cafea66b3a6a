//! The `ws2http` command: parse flags, set up logging, run the server, and
//! turn any start-up problem into one clear line.

use clap::Parser;

fn main() {
    // Before any allocation worth tuning and before any thread starts.
    ws2http::malloc::tune();
    let mut args = std::env::args_os();
    // Installed as `websocketd`: websocketd's command line (src/websocketd/).
    if ws2http::websocketd::invoked_as_websocketd(args.next().as_ref()) {
        std::process::exit(ws2http::websocketd::main(args.collect()));
    }
    let expanded = match ws2http::cli_sources::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ws2http: error: {e}");
            std::process::exit(2);
        }
    };
    let cli = match ws2http::config::Cli::try_parse_from(&expanded.args) {
        Ok(cli) => cli,
        Err(e) => {
            // A websocketd flag: say what ws2http has instead.
            let text: Vec<String> = expanded.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            match ws2http::websocketd::hint::for_args(&text) {
                Some(hint) if e.kind() == clap::error::ErrorKind::UnknownArgument => {
                    eprintln!("ws2http: error: {hint}");
                    std::process::exit(2);
                }
                _ => e.exit(),
            }
        }
    };
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Our own events at `level`; other crates only when something is wrong.
    ws2http::logging::init(level);
    let result = match cli.command {
        Some(ws2http::config::Command::Try(args)) => ws2http::try_cmd::run(args),
        Some(ws2http::config::Command::Connect(args)) => match ws2http::connect::run(args) {
            Ok(()) => Ok(()),
            Err(f) => {
                if !f.message.is_empty() {
                    eprintln!("ws2http connect: {}", f.message);
                }
                std::process::exit(f.status);
            }
        },
        Some(ws2http::config::Command::Completions(args)) => ws2http::manual::completions(args),
        Some(ws2http::config::Command::Man(args)) => ws2http::manual::man(args),
        None => {
            for (level, note) in &expanded.notes {
                log::log!(*level, "{note}");
            }
            cli.into_config().and_then(ws2http::server::run).map_err(|e| expanded.explain(e))
        }
    };
    if let Err(e) = result {
        eprintln!("ws2http: error: {e}");
        std::process::exit(2);
    }
}
