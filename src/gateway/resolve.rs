//! Maps a URL path to a script under `--cgi-bin` (or to the single script).
//!
//! The longest prefix of the path's segments that names a regular file is
//! the script; the rest is PATH_INFO. Anything that could step outside the
//! directory — `..`, `.`, encoded dots or slashes, backslashes, dotfiles,
//! symlinks that point elsewhere — resolves to nothing, which the caller
//! answers with 404.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;

use crate::event::Target;

/// Extension (without dot) → interpreter command and its arguments.
pub type Handlers = Vec<(String, Arc<[String]>)>;

/// What a path resolves to: a [`Target`] here, a routed target in
/// [`super::routes::Routes::resolve`].
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved<T = Target> {
    Found(T),
    NotFound,
    /// A script exists but cannot be run; the text tells the user how to fix it.
    NotRunnable(String),
}

#[derive(Clone, Debug)]
pub struct Resolver {
    /// Canonical `--cgi-bin` directory; empty: none (websocketd with only
    /// `--staticdir`/`--cgidir` has no WebSocket endpoint).
    root: PathBuf,
    /// Canonical single script, in single-script mode.
    single: Option<PathBuf>,
    handlers: Handlers,
}

/// A local file a URL path names, before the check that it can be run
/// (which depends on the route that serves it).
#[derive(Debug)]
pub struct Located {
    /// Canonical path of the file.
    pub filename: PathBuf,
    /// The URL path of the file (empty for the single script).
    pub script_name: String,
    /// The decoded rest of the URL path.
    pub path_info: String,
}

impl Resolver {
    pub fn new(root: PathBuf, single: Option<PathBuf>, handlers: Handlers) -> Self {
        Resolver { root, single, handlers }
    }

    /// The canonical directory of scripts (empty: none).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `false` for a resolver without a directory of scripts (an empty `root`).
    fn has_dir(&self) -> bool {
        !self.root.as_os_str().is_empty()
    }

    /// `true` when `canonical` (a canonical path) is a script: it lies under
    /// `--cgi-bin`, is the single script, or has a handler's extension
    /// (`.php`, any `--handler EXT`) wherever it is. Such a file is never
    /// served as a static file, whatever its mode, so its source cannot
    /// leak when it is not runnable or was put in `--root` by mistake.
    pub fn is_script(&self, canonical: &Path) -> bool {
        let ext = canonical.extension().and_then(|e| e.to_str()).unwrap_or("");
        // Every path starts with the empty one.
        (self.has_dir() && canonical.starts_with(&self.root))
            || self.single.as_deref() == Some(canonical)
            || (!ext.is_empty() && self.handlers.iter().any(|(e, _)| e == ext))
    }

    /// Resolves a raw (still percent-encoded) URL path to a local script
    /// that is spawned (the routing table passes its own `by_server`).
    #[cfg(test)]
    pub fn resolve(&self, raw_path: &str) -> Resolved {
        match self.locate(raw_path) {
            Some(found) => self.runnable(found, false),
            None => Resolved::NotFound,
        }
    }

    /// The local file a raw (still percent-encoded) URL path names, runnable
    /// or not: `None` when there is none, or the path could step outside.
    pub fn locate(&self, raw_path: &str) -> Option<Located> {
        let segments = safe_segments(raw_path)?;
        if let Some(single) = &self.single {
            let path_info = decoded_rest(raw_path, &segments, 0);
            let path_info = if path_info.is_empty() { "/".into() } else { path_info };
            return Some(Located { filename: single.clone(), script_name: String::new(), path_info });
        }
        if !self.has_dir() {
            return None;
        }
        let mut cur = self.root.clone();
        for (i, seg) in segments.iter().enumerate() {
            cur.push(&seg.decoded);
            match std::fs::metadata(&cur) {
                Ok(m) if m.is_dir() => continue,
                Ok(m) if m.is_file() => {
                    let canon = cur.canonicalize().ok()?;
                    if !canon.starts_with(&self.root) {
                        log::warn!(
                            "refused {}: {} points outside --cgi-bin",
                            crate::logging::quoted(raw_path),
                            cur.display()
                        );
                        return None;
                    }
                    let script_name: String = segments[..=i].iter().map(|s| format!("/{}", s.decoded)).collect();
                    let path_info = decoded_rest(raw_path, &segments, i + 1);
                    return Some(Located { filename: canon, script_name, path_info });
                }
                _ => return None,
            }
        }
        None
    }

    /// Every endpoint under the root, as URL paths, sorted.
    #[cfg(test)]
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints_where(&|url| matches!(self.resolve(url), Resolved::Found(_)))
    }

    /// Every file under the root that `found` accepts as an endpoint, as
    /// URL paths, sorted (`/` in single-script mode).
    pub fn endpoints_where(&self, found: &dyn Fn(&str) -> bool) -> Vec<String> {
        if self.single.is_some() {
            return vec!["/".into()];
        }
        let mut list = Vec::new();
        if !self.has_dir() {
            return list;
        }
        walk(&self.root, "", 0, &mut |url| {
            if found(&url) {
                list.push(url);
            }
        });
        list.sort();
        list
    }

    /// The target of a located file, or why it cannot be run. `by_server`:
    /// the route that serves it runs it in a backend server (FastCGI), so a
    /// `.php` file there is a script, executable or not (php-fpm runs only
    /// .php by default: `security.limit_extensions`).
    pub fn runnable(&self, found: Located, by_server: bool) -> Resolved {
        let Located { filename, script_name, path_info } = found;
        let ext = filename.extension().and_then(|e| e.to_str()).unwrap_or("");
        let interpreter = self.handlers.iter().find(|(e, _)| e == ext).map(|(_, cmd)| cmd.clone());
        let remote = ext == "php" && by_server;
        if interpreter.is_none() && !remote {
            let mode = std::fs::metadata(&filename).map(|m| m.permissions().mode()).unwrap_or(0);
            if mode & 0o111 == 0 {
                return Resolved::NotRunnable(format!(
                    "{} is not executable: run `chmod +x {}` (with a #! line), or pass --handler {}=PROGRAM \
                     (files in --cgi-bin are never served as static files: a file that is not a script \
                     belongs in --root)",
                    filename.display(),
                    filename.display(),
                    if ext.is_empty() { "EXT" } else { ext }
                ));
            }
        }
        Resolved::Found(Target { filename, script_name, path_info, interpreter })
    }
}

/// `true` when `path` is `prefix` or below it (`/` covers everything).
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
}

fn walk(dir: &Path, url: &str, depth: usize, f: &mut dyn FnMut(String)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let url = format!("{url}/{name}");
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() && depth < 8 => walk(&path, &url, depth + 1, f),
            Ok(m) if m.is_file() => f(url),
            _ => {}
        }
    }
}

/// `true` when a raw URL path may name anything at all (see [`safe_segments`]).
pub fn is_safe(raw_path: &str) -> bool {
    safe_segments(raw_path).is_some()
}

/// The decoded path below a root for a raw URL path, or `None` when the
/// path tries to step out (same rules as scripts). Shared with static files.
pub fn safe_relative_path(raw_path: &str) -> Option<PathBuf> {
    Some(safe_segments(raw_path)?.into_iter().map(|s| s.decoded).collect())
}

struct Segment {
    /// Byte offset of the segment's end in the raw path.
    end: usize,
    decoded: String,
}

/// Splits a raw path into decoded segments, or `None` when any segment could
/// step out of the directory or hide a separator.
fn safe_segments(raw: &str) -> Option<Vec<Segment>> {
    if !raw.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    let mut start = 1;
    for part in raw[1..].split('/') {
        let end = start + part.len();
        if !part.is_empty() {
            let lower = part.to_ascii_lowercase();
            if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
                return None;
            }
            let decoded = percent_decode_str(part).decode_utf8().ok()?.into_owned();
            if decoded.starts_with('.') || decoded.contains(['/', '\\', '\0']) {
                return None;
            }
            out.push(Segment { end, decoded });
        }
        start = end + 1;
    }
    Some(out)
}

/// PATH_INFO: the decoded path after segment `from` (a trailing slash is
/// kept), or empty when nothing follows.
fn decoded_rest(raw: &str, segments: &[Segment], from: usize) -> String {
    let start = if from == 0 { 0 } else { segments[from - 1].end };
    percent_decode_str(&raw[start..]).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn setup() -> (PathBuf, Resolver) {
        let base = std::env::temp_dir().join(format!("ws2http-resolve-{}", crate::id::ConnId::random()));
        let root = base.join("cgi");
        fs::create_dir_all(root.join("sub")).expect("test fixture setup");
        fs::write(base.join("outside.sh"), "#!/bin/sh\n").expect("test fixture setup");
        for (p, mode) in
            [("chat.sh", 0o755), ("sub/x.sh", 0o755), ("plain.txt", 0o644), ("page.php", 0o644), (".hidden.sh", 0o755)]
        {
            fs::write(root.join(p), "#!/bin/sh\n").expect("test fixture setup");
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).expect("test fixture setup");
        }
        fs::set_permissions(base.join("outside.sh"), fs::Permissions::from_mode(0o755)).expect("test fixture setup");
        symlink(base.join("outside.sh"), root.join("escape.sh")).expect("test fixture setup");
        symlink(root.join("chat.sh"), root.join("alias.sh")).expect("test fixture setup");
        let root = root.canonicalize().expect("test fixture setup");
        let r = Resolver::new(root.clone(), None, vec![("php".into(), Arc::from(vec!["php-cgi".to_string()]))]);
        (root, r)
    }

    fn found(r: &Resolver, p: &str) -> (String, String) {
        match r.resolve(p) {
            Resolved::Found(t) => (t.script_name, t.path_info),
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn longest_file_prefix_and_path_info() {
        let (root, r) = setup();
        assert_eq!(found(&r, "/chat.sh"), ("/chat.sh".into(), "".into()));
        assert_eq!(found(&r, "/chat.sh/lobby"), ("/chat.sh".into(), "/lobby".into()));
        assert_eq!(found(&r, "/chat.sh/a%20b/c/"), ("/chat.sh".into(), "/a b/c/".into()));
        assert_eq!(found(&r, "/sub/x.sh/y"), ("/sub/x.sh".into(), "/y".into()));
        assert_eq!(found(&r, "/alias.sh"), ("/alias.sh".into(), "".into()));
        assert_eq!(found(&r, "/page.php"), ("/page.php".into(), "".into()));
        match r.resolve("/chat.sh") {
            Resolved::Found(t) => assert_eq!(t.filename, root.join("chat.sh")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escapes_and_missing_are_not_found() {
        let (_, r) = setup();
        for p in [
            "/../outside.sh",
            "/sub/../chat.sh",
            "/%2e%2e/outside.sh",
            "/sub%2fx.sh",
            "/sub%2Fx.sh",
            "/escape.sh",
            "/.hidden.sh",
            "/./chat.sh",
            "/nope.sh",
            "/sub",
            "/",
            "chat.sh",
            "/sub/..%5cchat.sh",
            "/chat.sh/..",
            "/chat.sh/%2e%2e",
        ] {
            assert_eq!(r.resolve(p), Resolved::NotFound, "{p}");
        }
    }

    #[test]
    fn not_executable_is_reported() {
        let (_, r) = setup();
        assert!(matches!(r.resolve("/plain.txt"), Resolved::NotRunnable(m) if m.contains("chmod +x")));
    }

    #[test]
    fn scripts_are_what_is_under_cgi_bin_the_single_script_and_handled_extensions() {
        let (root, r) = setup();
        assert!(r.is_script(&root.join("plain.txt")) && r.is_script(&root.join("sub")) && r.is_script(&root));
        let parent = root.parent().expect("parent");
        assert!(!r.is_script(parent) && !r.is_script(&root.with_file_name("cgi2")));
        assert!(r.is_script(&parent.join("old.php")) && !r.is_script(&parent.join("style.css")));
        let single = Resolver::new(PathBuf::from("/nonexistent"), Some(root.join("chat.sh")), vec![]);
        assert!(single.is_script(&root.join("chat.sh")) && !single.is_script(&root.join("plain.txt")));
    }

    #[test]
    fn single_script_mode_puts_the_path_in_path_info() {
        let (root, _) = setup();
        let r = Resolver::new(root.clone(), Some(root.join("chat.sh")), vec![]);
        assert_eq!(found(&r, "/any/where"), ("".into(), "/any/where".into()));
        assert_eq!(found(&r, "/"), ("".into(), "/".into()));
        assert_eq!(r.resolve("/../x"), Resolved::NotFound);
    }

    #[test]
    fn no_directory_means_no_endpoints() {
        let (root, _) = setup();
        let none = Resolver::new(PathBuf::new(), None, vec![]);
        assert_eq!((none.resolve("/chat.sh"), none.resolve("/")), (Resolved::NotFound, Resolved::NotFound));
        assert!(none.endpoints().is_empty());
        assert!(!none.is_script(&root.join("chat.sh")) && !none.is_script(Path::new("/")));
    }

    #[test]
    fn endpoints_lists_runnable_scripts() {
        let (_, r) = setup();
        assert_eq!(r.endpoints(), ["/alias.sh", "/chat.sh", "/page.php", "/sub/x.sh"]);
    }
}
