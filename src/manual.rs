//! `ws2http man` and `ws2http completions SHELL`: the manual page and the
//! shell completions are generated from the clap definitions in
//! [`crate::config`], so they list exactly the flags the binary accepts and
//! cannot drift from `--help`. The Debian package (contrib/build-deb) ships
//! what these commands print.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::config::{example_lines, Cli, CompletionsArgs, ManArgs, SETTINGS_NOTE};

/// Extra sections of ws2http(1): where the packaged files live and which
/// documents say more than the flag list can.
const MAIN_PAGE_FILES: &str = r#".SH FILES
.TP
\fI/etc/ws2http/ws2http.toml\fR
Settings read with \fB\-\-config\fR (the systemd unit passes it); every key is a long flag.
.TP
\fI/etc/ws2http/env\fR
Secrets for the systemd unit, e.g. WS2HTTP_API_TOKEN=...; mode 600.
.TP
\fI/usr/share/doc/ws2http/\fR
README.md, PROTOCOL.md (the contract for scripts), OPERATIONS.md (limits, security),
DEPLOYMENT.md (nginx, Redis, systemd), BACKENDS.md; demo scripts in examples/cgi-bin.
"#;

/// The clap command with the display names the pages use (`ws2http-try`).
/// Without `--help`'s after_help: clap_mangen would put it in a section
/// "EXTRA", reflowed; [`main_page`] renders the same text itself.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true).after_help(None::<&str>);
    cmd.build();
    cmd
}

/// `ws2http completions SHELL`: the completion script on stdout.
pub fn completions(args: CompletionsArgs) -> Result<(), String> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "ws2http", &mut out);
    write_stdout(&out)
}

/// `ws2http man [COMMAND]` or `ws2http man --out-dir DIR`.
pub fn man(args: ManArgs) -> Result<(), String> {
    let cmd = command();
    if let Some(dir) = args.out_dir {
        return write_pages(&cmd, &dir);
    }
    let page = match args.command.as_deref() {
        None => main_page(&cmd),
        Some(name) => {
            let sub = cmd.find_subcommand(name).ok_or_else(|| {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                format!("man: no subcommand {name:?}; pick one of {}", names.join(", "))
            })?;
            render(sub.clone())
        }
    }
    .map_err(|e| format!("man: rendering the page: {e}"))?;
    write_stdout(&page)
}

/// ws2http(1): clap's sections, ENVIRONMENT, [`MAIN_PAGE_FILES`], then
/// EXAMPLES as preformatted lines from the list `--help` uses.
fn main_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = render(cmd.clone())?;
    page.extend_from_slice(format!(".SH ENVIRONMENT\n{}\n", roff(SETTINGS_NOTE)).as_bytes());
    page.extend_from_slice(MAIN_PAGE_FILES.as_bytes());
    let examples: Vec<String> = example_lines().iter().map(|l| roff(l)).collect();
    page.extend_from_slice(format!(".SH EXAMPLES\n.nf\n{}\n.fi\n", examples.join("\n")).as_bytes());
    let mut see_also: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("\\fB{}\\fR(1)", s.get_display_name().unwrap_or(s.get_name()).replace('-', "\\-")))
        .collect();
    see_also.extend(["\\fBsystemd.service\\fR(5)".to_owned(), "\\fBnginx\\fR(8)".to_owned()]);
    page.extend_from_slice(format!(".SH SEE ALSO\n{}\n", see_also.join(", ")).as_bytes());
    Ok(page)
}

/// Text escaped for roff: backslashes and hyphens (a plain `-` may print
/// as a hyphen that cannot be copied into a shell).
fn roff(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    Ok(page)
}

/// Every page into `dir`: ws2http.1 and one ws2http-COMMAND.1 per subcommand.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("man --out-dir {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("ws2http.1"), main_page(cmd).map_err(io)?).map_err(io)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or_else(|| sub.get_name());
        std::fs::write(dir.join(format!("{name}.1")), render(sub.clone()).map_err(io)?).map_err(io)?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // `ws2http man | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}
