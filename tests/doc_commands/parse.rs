//! Reading the docs: fenced blocks, the `<!-- doc-test: ... -->` note before
//! a block, and the commands (with the output the docs show) in a block.
//! Anything the reader cannot place is an error, never a silent skip.

/// Fence languages whose blocks are commands to paste into a shell.
const SHELL_LANGS: &[&str] = &["sh", "bash", "shell", "console", "shell-session"];
/// Fence languages whose blocks are not commands (files, output, code).
const OTHER_LANGS: &[&str] =
    &["", "text", "ini", "nginx", "yaml", "toml", "js", "javascript", "json", "php", "python", "html", "css", "diff"];
/// A block of another language whose line starts with one of these looks
/// like a command: it must be fenced as one, or carry a `skip` note.
const COMMAND_WORDS: &[&str] = &[
    "ws2http",
    "cargo",
    "curl",
    "python3",
    "sudo",
    "systemctl",
    "apt-get",
    "apt",
    "dpkg",
    "install",
    "useradd",
    "runuser",
    "mkdir",
    "cp",
    "chmod",
    "websocat",
    "php-fpm",
    "nginx",
];

#[derive(Debug, Default, Clone)]
pub struct Notes {
    /// Never run this block, for this reason (shown as ignored).
    pub skip: Option<String>,
    /// Lines typed into the block's commands, in order (the same lines in
    /// the transcript are input, not expected output).
    pub inputs: Vec<String>,
    /// The block's command keeps running while the docs go on.
    pub background: bool,
    /// Start a server (`ws2http` with these arguments) before the block.
    pub server: Option<String>,
    /// (id as the docs write it, or `-`; path): a WebSocket client connected
    /// first; the id in the block stands for its real id.
    pub connections: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub file: String,
    pub line: usize,
    pub lang: String,
    pub lines: Vec<String>,
    pub notes: Notes,
}

impl Block {
    pub fn name(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone)]
pub struct Cmd {
    pub line: usize,
    pub text: String,
    /// The output the docs show (console: the lines after the command; sh:
    /// the `#` comment lines right below it).
    pub expect: Vec<String>,
    pub console: bool,
}

#[derive(Debug, Clone)]
pub enum Step {
    Assign(String, String),
    Run(Cmd),
}

#[derive(Debug)]
pub enum Kind {
    Commands(Vec<Step>),
    /// A script to save as a file (`#!` first), not commands.
    Script,
    NotCommands,
}

/// Every fenced block of one Markdown file, with its note.
pub fn blocks(file: &str, text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut pending: Option<(usize, Notes)> = None;
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        if t.starts_with("<!-- doc-test") {
            let start = i;
            let mut body = String::new();
            loop {
                body.push_str(lines[i]);
                body.push('\n');
                if lines[i].contains("-->") {
                    break;
                }
                i += 1;
                if i == lines.len() {
                    return Err(format!("{file}:{}: doc-test note without -->", start + 1));
                }
            }
            if pending.is_some() {
                return Err(format!("{file}:{}: two doc-test notes before one block", start + 1));
            }
            pending = Some((start + 1, parse_notes(&body).map_err(|e| format!("{file}:{}: {e}", start + 1))?));
        } else if let Some((ticks, rest)) = fence(t) {
            let indent = lines[i].len() - lines[i].trim_start().len();
            let lang = rest.split_whitespace().next().unwrap_or("").to_owned();
            let open = i;
            let mut body = Vec::new();
            i += 1;
            let closes = |l: &str| fence(l.trim()).is_some_and(|(n, r)| n >= ticks && r.trim().is_empty());
            while i < lines.len() && !closes(lines[i]) {
                let l = lines[i];
                let strip = (l.len() - l.trim_start().len()).min(indent);
                body.push(l[strip..].to_owned());
                i += 1;
            }
            if i == lines.len() {
                return Err(format!("{file}:{}: fenced block never closed", open + 1));
            }
            let notes = pending.take().map(|(_, n)| n).unwrap_or_default();
            out.push(Block { file: file.to_owned(), line: open + 1, lang, lines: body, notes });
        } else if !t.is_empty() {
            if let Some((at, _)) = pending {
                return Err(format!("{file}:{at}: a doc-test note must come right before a fenced block"));
            }
        }
        i += 1;
    }
    match pending {
        Some((at, _)) => Err(format!("{file}:{at}: a doc-test note at the end of the file, before no block")),
        None => Ok(out),
    }
}

/// A fence line (CommonMark): 3 or more backticks, then an info string
/// without backticks; (backtick count, info string).
fn fence(t: &str) -> Option<(usize, &str)> {
    let ticks = t.chars().take_while(|&c| c == '`').count();
    let rest = &t[ticks..];
    (ticks >= 3 && !rest.contains('`')).then_some((ticks, rest))
}

/// `<!-- doc-test: KEYWORD ARGS -->`, or one `KEYWORD ARGS` per line.
fn parse_notes(body: &str) -> Result<Notes, String> {
    let inner = body.trim().trim_start_matches("<!--").trim_end_matches("-->").trim();
    let inner =
        inner.strip_prefix("doc-test").and_then(|s| s.strip_prefix(':')).ok_or("write <!-- doc-test: ... -->")?;
    let mut notes = Notes::default();
    for line in inner.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (key, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim();
        match key {
            "skip" if !arg.is_empty() => notes.skip = Some(arg.to_owned()),
            "skip" => return Err("`skip` needs a reason: <!-- doc-test: skip why it cannot run here -->".into()),
            "input" => notes.inputs.push(arg.to_owned()),
            "background" => notes.background = true,
            "server" => notes.server = Some(arg.to_owned()),
            "connection" => match arg.split_once(' ') {
                Some((id, path)) if path.starts_with('/') => notes.connections.push((id.into(), path.trim().into())),
                _ => return Err("write `connection ID-IN-THE-DOCS /path?query`".into()),
            },
            _ => return Err(format!("unknown doc-test note {key:?} (skip, input, background, server, connection)")),
        }
    }
    Ok(notes)
}

/// What a block is; an error for a block the harness cannot place.
pub fn classify(b: &Block) -> Result<Kind, String> {
    let prompt = b.lines.iter().any(|l| l.starts_with("$ "));
    if SHELL_LANGS.contains(&b.lang.as_str()) {
        if b.lang == "console" || prompt {
            return console_steps(b).map(Kind::Commands);
        }
        if b.lines.first().is_some_and(|l| l.starts_with("#!")) {
            return Ok(Kind::Script);
        }
        let steps = sh_steps(b)?;
        if !steps.iter().any(|s| matches!(s, Step::Run(_))) {
            return Err("a ```sh block with no command (an environment listing? fence it as ```text)".into());
        }
        return Ok(Kind::Commands(steps));
    }
    if !OTHER_LANGS.contains(&b.lang.as_str()) {
        return Err(format!("unknown fence language {:?}: add it to tests/doc_commands/parse.rs", b.lang));
    }
    if prompt {
        return console_steps(b).map(Kind::Commands);
    }
    // A language named (```text, ```ini) says "not a command"; an unnamed
    // block is read, so a command cannot hide in one.
    let looks_like_command = b.lang.is_empty()
        && b.lines.iter().any(|l| l.split_whitespace().next().is_some_and(|w| COMMAND_WORDS.contains(&w)));
    if looks_like_command {
        return Err("this looks like a command: fence it as ```sh or ```console, or add \
                    <!-- doc-test: skip REASON --> before it"
            .into());
    }
    Ok(Kind::NotCommands)
}

/// `$ command` lines, each followed by its transcript.
fn console_steps(b: &Block) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < b.lines.len() {
        let l = &b.lines[i];
        if let Some(cmd) = l.strip_prefix("$ ") {
            let line = b.line + 1 + i;
            let mut text = cmd.to_owned();
            while text.ends_with('\\') && i + 1 < b.lines.len() {
                i += 1;
                text.push('\n');
                text.push_str(b.lines[i].strip_prefix("> ").unwrap_or(&b.lines[i]));
            }
            steps.push(Step::Run(Cmd { line, text, expect: Vec::new(), console: true }));
        } else if let Some(Step::Run(cmd)) = steps.last_mut() {
            cmd.expect.push(l.clone());
        } else if !l.trim().is_empty() {
            return Err(format!("line {}: a console block starts with a `$ ` command", b.line + 1 + i));
        }
        i += 1;
    }
    for s in &mut steps {
        if let Step::Run(c) = s {
            while c.expect.last().is_some_and(|l| l.trim().is_empty()) {
                c.expect.pop();
            }
        }
    }
    Ok(steps)
}

/// Shell lines: commands (with `\` continuations and here-documents),
/// `NAME=value` assignments, and `# output` comments right below a command.
fn sh_steps(b: &Block) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut after_cmd = false;
    let mut i = 0;
    while i < b.lines.len() {
        let l = b.lines[i].trim_end();
        let line = b.line + 1 + i;
        if l.trim().is_empty() {
            after_cmd = false;
        } else if let Some(c) = l.trim_start().strip_prefix('#') {
            if let (true, Some(Step::Run(cmd))) = (after_cmd, steps.last_mut()) {
                cmd.expect.push(c.strip_prefix(' ').unwrap_or(c).to_owned());
            }
        } else {
            let mut text = l.to_owned();
            while text.ends_with('\\') && i + 1 < b.lines.len() {
                i += 1;
                text.push('\n');
                text.push_str(&b.lines[i]);
            }
            if let Some(end) = heredoc_end(&text) {
                loop {
                    i += 1;
                    let Some(next) = b.lines.get(i) else {
                        return Err(format!("line {line}: here-document never ends"));
                    };
                    text.push('\n');
                    text.push_str(next);
                    if next.trim() == end {
                        break;
                    }
                }
            }
            match assignment(&text) {
                Some((n, v)) => {
                    steps.push(Step::Assign(n, v));
                    after_cmd = false;
                }
                None => {
                    steps.push(Step::Run(Cmd { line, text, expect: Vec::new(), console: false }));
                    after_cmd = true;
                }
            }
        }
        i += 1;
    }
    Ok(steps)
}

/// The terminator of a here-document started on this line (`<<'EOF'`).
fn heredoc_end(text: &str) -> Option<String> {
    let after = text.split_once("<<")?.1.trim_start_matches('-').trim_start();
    let word: String = after.chars().take_while(|c| !c.is_whitespace()).collect();
    let word = word.trim_matches(|c| c == '\'' || c == '"').to_owned();
    (!word.is_empty()).then_some(word)
}

/// `NAME=value` alone on a line.
fn assignment(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once('=')?;
    let ident = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    (ident && !value.contains(char::is_whitespace)).then(|| (name.to_owned(), value.to_owned()))
}

/// The harness's own checks (a `harness = false` test runs no #[test]).
pub mod self_test {
    use super::*;

    fn one(md: &str) -> Result<Kind, String> {
        let b = blocks("T.md", md)?;
        classify(&b[0])
    }

    pub fn a_block_the_harness_cannot_place_is_an_error() {
        assert!(one("```\nws2http --listen 127.0.0.1:9\n```\n").unwrap_err().contains("looks like a command"));
        assert!(matches!(one("```text\nws2http [OPTIONS]\n```\n").unwrap(), Kind::NotCommands));
        assert!(one("```zsh\nls\n```\n").unwrap_err().contains("unknown fence language"));
        assert!(one("```sh\nA=1\nB=2\n```\n").unwrap_err().contains("no command"));
        assert!(one("```console\nhello\n$ ls\n```\n").unwrap_err().contains("starts with"));
        assert!(blocks("T.md", "<!-- doc-test: skip -->\n```sh\nls\n```\n").unwrap_err().contains("reason"));
        assert!(blocks("T.md", "<!-- doc-test: frobnicate -->\n```sh\nls\n```\n").unwrap_err().contains("unknown"));
        assert!(blocks("T.md", "<!-- doc-test: background -->\ntext\n```sh\nls\n```\n").is_err());
        assert!(blocks("T.md", "```sh\nls\n").is_err());
        assert!(blocks("T.md", "```` ```sh ```` is inline code\n").unwrap().is_empty());
    }

    pub fn commands_and_their_output_are_read() {
        let md = "<!-- doc-test:\n  input hi\n  background\n-->\n  ```console\n  $ a \\\n  > b\n  out\n\n  ```\n";
        let b = blocks("T.md", md).unwrap();
        assert_eq!(b[0].notes.inputs, ["hi"]);
        assert!(b[0].notes.background);
        let Kind::Commands(steps) = classify(&b[0]).unwrap() else { panic!("commands") };
        let Step::Run(c) = &steps[0] else { panic!("a command") };
        assert_eq!((c.text.as_str(), c.expect.clone()), ("a \\\nb", vec!["out".to_owned()]));

        let md = "```sh\n# label\nAPI=http://x\ncurl $API  # note\n# {\"a\":1}\n\ncat <<'EOF'\nx\nEOF\n```\n";
        let Kind::Commands(steps) = one(md).unwrap() else { panic!("commands") };
        assert!(matches!(&steps[0], Step::Assign(n, v) if n == "API" && v == "http://x"));
        assert!(matches!(&steps[1], Step::Run(c) if c.expect == ["{\"a\":1}"]));
        assert!(matches!(&steps[2], Step::Run(c) if c.text == "cat <<'EOF'\nx\nEOF" && c.expect.is_empty()));
        assert!(matches!(one("```sh\n#!/bin/sh\necho\n```\n").unwrap(), Kind::Script));
        assert!(matches!(one("```\n@join lobby\n```\n").unwrap(), Kind::NotCommands));
    }
}
