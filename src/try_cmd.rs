//! `ws2http try SCRIPT --event …`: runs a script once with exactly the
//! environment a real event would get, and prints what it did. For script
//! authors debugging without a browser.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::action::CloseCause;
use crate::backend::env::EnvSettings;
use crate::backend::spawn::{self, Spawn, Stderr};
use crate::config::{inherited_env, parse_handlers, EventArg, TryArgs};
use crate::event::{ConnInfo, Event, EventKind, RequestFields, RequestInfo, Target};
use crate::gateway::{Limits, Outcome, Output};
use crate::id::ConnId;
use crate::runtime;

/// `println!` that ends the command quietly (status 141, as SIGPIPE would)
/// when stdout is gone (`ws2http try ... | head -1`), instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// Runs the script; `Err` is a usage problem. The process exits 1 when the
/// script failed.
pub fn run(args: TryArgs) -> Result<(), String> {
    // SIGPIPE stays ignored, as in the server: a script that exits without
    // reading its input must not kill `try` when its stdin is written (the
    // default disposition did, now and then). Output piped into `head`
    // still ends quietly: see [`say!`].
    match runtime::block_on(try_once(args))? {
        ExitCode::SUCCESS => Ok(()),
        _ => std::process::exit(1),
    }
}

async fn try_once(args: TryArgs) -> Result<ExitCode, String> {
    let event = build_event(&args)?;
    let id = event.conn.id.clone();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let backend = backend(&args, &event.conn.target.filename, stderr.clone())?;

    say!("event:    {} for connection {id}", describe_event(&event.kind));
    let started = Instant::now();
    let mut count = 0;
    let mut print = |o: Output| {
        count += 1;
        match o {
            Output::Head(h) => {
                let mut parts: Vec<String> = h.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                if let Some(s) = h.status {
                    parts.insert(0, format!("Status: {s}"));
                }
                say!("headers:  {}", parts.join(" | "));
            }
            Output::Action(a) => say!("action:   {}", a.describe(&id)),
            Output::RejectBody(b) => {
                say!("reject:   the open is refused; response body {:?}", String::from_utf8_lossy(&b))
            }
        }
    };
    let outcome = crate::gateway::run(&backend, &event, &mut print).await;
    let took = started.elapsed();
    if count == 0 {
        say!("action:   (none)");
    }
    // Nothing outlives `try`: what the script left running (a background
    // job) is stopped now, as a server stops it at its budget's end.
    let left = spawn::groups::stop_all(backend.grace).await;
    if left > 0 {
        say!("stopped:  {left} process group(s) the script left running (SIGTERM, SIGKILL after the grace period)");
    }
    print_stderr(&stderr).await;
    let code = match &outcome {
        Outcome::Success => {
            say!("exit:     ok");
            ExitCode::SUCCESS
        }
        Outcome::Failed(why) | Outcome::Unavailable(why) => {
            say!("exit:     failed: {why}");
            ExitCode::FAILURE
        }
    };
    say!("duration: {took:.1?}");
    Ok(code)
}

/// The event the flags describe, for the script they name.
fn build_event(args: &TryArgs) -> Result<Event, String> {
    let filename = args.script.canonicalize().map_err(|e| format!("{}: {e}", args.script.display()))?;
    if !filename.is_file() {
        return Err(format!("{}: not a regular file", args.script.display()));
    }
    let handlers = parse_handlers(&args.handlers)?;
    let ext = filename.extension().and_then(|e| e.to_str()).unwrap_or("");
    let interpreter = handlers.iter().find(|(e, _)| e == ext).map(|(_, c)| c.clone());
    let name = filename.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = Target { filename, script_name: format!("/{name}"), path_info: args.path_info.clone(), interpreter };
    let kind = event_kind(args)?;
    let mut headers = vec![("Host".to_owned(), "localhost:8080".to_owned())];
    for h in &args.headers {
        let (n, v) = h.split_once(':').ok_or_else(|| format!("--header {h:?}: expected NAME: VALUE"))?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let mut meta = Vec::new();
    for m in &args.meta {
        let (k, v) = m.split_once('=').ok_or_else(|| format!("--meta {m:?}: expected KEY=VALUE"))?;
        meta.push((k.to_owned(), v.to_owned()));
    }
    meta.sort();
    let mut rooms = args.rooms.clone();
    rooms.sort();
    let query = if args.query.is_empty() { String::new() } else { format!("?{}", args.query) };
    let fields = RequestFields {
        method: "GET",
        uri: &format!("{}{}{query}", target.script_name, target.path_info),
        query: &args.query,
        remote_addr: "127.0.0.1",
        remote_port: "50000",
        server_name: "localhost",
        server_port: "8080",
    };
    let request = RequestInfo::new(fields, headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    Ok(Event { kind, conn: Arc::new(ConnInfo { id: ConnId::random(), target, request }), rooms, meta })
}

fn event_kind(args: &TryArgs) -> Result<EventKind, String> {
    let payload = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).map_err(|e| format!("--data-file {}: {e}", f.display()))?,
        (None, None) => Vec::new(),
    };
    Ok(match args.event {
        EventArg::Open => EventKind::Open,
        EventArg::Message => {
            if !args.binary && std::str::from_utf8(&payload).is_err() {
                return Err("the payload is not UTF-8; add --binary to send it as a binary message".into());
            }
            EventKind::Message { payload: payload.into(), binary: args.binary }
        }
        EventArg::Close => {
            EventKind::Close { code: args.close_code, reason: args.close_reason.clone(), cause: CloseCause::Client }
        }
        EventArg::Resume => EventKind::Resume { count: 1, remote_addr: "127.0.0.1".into() },
    })
}

/// The CGI backend as the server would run it, with stderr collected.
fn backend(args: &TryArgs, filename: &std::path::Path, stderr: Arc<Mutex<Vec<u8>>>) -> Result<Spawn, String> {
    let env = EnvSettings {
        api_url: args.api_url.clone(),
        api_token: args.api_token.clone(),
        inherited: inherited_env(&args.pass_env)?,
        document_root: filename.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
        ..EnvSettings::default()
    };
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err("--timeout must be a positive number of seconds".into());
    }
    let limits = Limits { timeout: Duration::from_secs_f64(args.timeout), max_output: 4 << 20 };
    Ok(Spawn::new(env, limits, Stderr::Collect(stderr), 1))
}

/// Prints what the script wrote to stderr, once the reader has it all.
async fn print_stderr(stderr: &Arc<Mutex<Vec<u8>>>) {
    // The stderr reader drops its handle when the pipe closes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(stderr) > 2 && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(2)).await;
    }
    let err = String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    for line in err.lines() {
        say!("stderr:   {line}");
    }
}

fn describe_event(k: &EventKind) -> String {
    match k {
        EventKind::Open => "open".into(),
        EventKind::Message { payload, binary } => {
            format!("message ({}, {} bytes)", if *binary { "binary" } else { "text" }, payload.len())
        }
        EventKind::Close { code, reason, .. } => format!("close ({code} {reason:?})"),
        EventKind::Resume { count, .. } => format!("resume ({count})"),
    }
}
