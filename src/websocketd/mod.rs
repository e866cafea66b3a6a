//! The `websocketd` command: the same binary, installed or symlinked under
//! that name (`ln -s "$(which ws2http)" ~/.local/bin/websocketd`), reads
//! websocketd 0.4.1's command line and runs it with ws2http's server, so
//! every websocketd command line and script moves over unchanged.
//!
//! Why a second front end rather than aliases in ws2http's own flags: the
//! two command lines disagree on syntax (Go's `-flag`, booleans that take a
//! value only after `=`, parsing that stops at COMMAND) and on meaning
//! (websocketd binds all interfaces, runs a process per connection, passes
//! only `--passenv`); mixing them would make both ambiguous. So the name the
//! binary is started under picks one ([`invoked_as_websocketd`]), and ws2http
//! itself answers a websocketd flag with a hint ([`hint`]).
//!
//! [`args`] parses, [`translate`] maps onto a ws2http `Config`; the
//! differences from websocketd are documented in README.md "Coming from websocketd".

pub mod args;
pub mod hint;
pub mod translate;

use std::ffi::OsString;

use args::{ParseError, WsdArgs};
use translate::Plan;

/// `true` when argv[0]'s file name is `websocketd`.
pub fn invoked_as_websocketd(argv0: Option<&OsString>) -> bool {
    argv0.and_then(|a| std::path::Path::new(a).file_name()).is_some_and(|n| n == "websocketd")
}

/// Runs websocketd's command line (`args` without the program name); the
/// process's exit status: 0, 1 for a setting websocketd would also refuse
/// or a server that could not start, 2 for a command line that does not
/// parse (Go's `flag` uses 2 too).
pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let parsed = match WsdArgs::parse_go(&args) {
        Ok(p) => p,
        Err(ParseError::Go(e)) => {
            eprintln!("websocketd: error: {e}");
            return 2;
        }
        Err(ParseError::Clap(e)) if e.use_stderr() => {
            eprintln!("websocketd: error: {}", args::one_line(&e));
            return 2;
        }
        Err(ParseError::Clap(e)) => {
            let _ = e.print();
            return 0;
        }
    };
    match translate::plan(&parsed) {
        Ok(Plan::Print(text)) => {
            println!("{text}");
            0
        }
        Ok(Plan::Serve { cfg, level, notes, equivalent }) => {
            crate::logging::init(level);
            log::debug!("as ws2http: {} (plus websocketd's CGI environment and options)", equivalent.join(" "));
            for note in notes {
                log::warn!("{note}");
            }
            if std::iter::once(&cfg.listen).chain(&cfg.extra_listen).any(|l| l.starts_with("0.0.0.0:")) {
                log::info!(
                    "listening on every interface, as websocketd does; --address=127.0.0.1 keeps it on this machine"
                );
            }
            match crate::server::run(*cfg) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("websocketd: error: {}", translate::websocketd_words(&e));
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("websocketd: error: {e}");
            1
        }
    }
}
