//! Static files from `--root`: index.html for directories, Content-Type by
//! extension, Last-Modified/ETag with 304, HEAD, and single byte ranges for
//! large files (206/416). Paths are checked with the same rules as scripts:
//! no dot segments, no encoded separators, no symlinks out of the root.
//!
//! A script is never a file: whatever lies under `--cgi-bin` (or
//! websocketd's `--cgidir`), is the single script, has a handler's extension
//! (`.php`), or is a file the single script's arguments name (websocketd's
//! `python3 c.py`: c.py is the script) is refused here by its canonical
//! path ([`NotFiles`]), so a script that cannot run (a missing handler, a
//! forgotten run bit) never leaks its source, also when `--cgi-bin` sits
//! inside `--root` or is reached through a symlink.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_lite::io::{AsyncReadExt, AsyncSeekExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tide::http::Method;
use tide::{Body, Request, Response, StatusCode};

use crate::gateway::resolve::{safe_relative_path, Resolver};

/// The log target of this module's lines: its path before it moved into
/// `http/`, which operators' `RUST_LOG` filters name.
const LOG: &str = "ws2http::static_files";

fn status(code: StatusCode) -> Response {
    crate::http1::request::text_response(code, code.canonical_reason())
}

/// What is never served as a file, by canonical path.
pub struct NotFiles<'a> {
    /// The events' scripts (`--cgi-bin`, the single script, handlers'
    /// extensions).
    pub scripts: &'a Resolver,
    /// The plain requests' scripts when they are another table
    /// (websocketd's `--cgidir`).
    pub pages: Option<&'a Resolver>,
    /// Files the single script's arguments name ([`named_files`]).
    pub named: &'a [PathBuf],
}

impl NotFiles<'_> {
    /// Why `canonical` (under `root`) is a script, or `None` when it may be
    /// be served. Under `--cgidir` every file is, except when `--cgidir`
    /// holds `root` itself (`--cgidir=. --staticdir=.`): then its
    /// executables are the scripts and the other files the static ones.
    fn why(&self, root: &Path, canonical: &Path) -> Option<&'static str> {
        let cgidir = |p: &Resolver| p.is_script(canonical) && (!root.starts_with(p.dir()) || executable(canonical));
        if self.scripts.is_script(canonical) {
            Some("is a script (under --cgi-bin, or a handler's extension)")
        } else if self.pages.is_some_and(cgidir) {
            Some("is a script (under --cgidir)")
        } else if self.named.iter().any(|f| f == canonical) {
            Some("is named in the COMMAND's arguments (a script's source)")
        } else {
            None
        }
    }
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The files `args` (the single script's arguments, relative to the
/// working directory the script runs in) name, canonical: `python3 c.py`
/// and `sh -c ./x.sh --conf=app.ini` protect c.py, app.ini. An argument
/// naming a file that does not exist yet is kept by its canonical
/// directory, so a file created later is protected too.
pub fn named_files(args: &[String]) -> Vec<PathBuf> {
    let names = args.iter().flat_map(|a| [Some(a.as_str()), a.split_once('=').map(|(_, v)| v)]).flatten();
    names
        .filter(|n| !n.is_empty() && !n.starts_with('-'))
        .filter_map(|n| {
            let p = Path::new(n);
            match p.canonicalize() {
                Ok(c) => (!c.is_dir()).then_some(c),
                Err(_) => {
                    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    Some(dir.canonicalize().ok()?.join(p.file_name()?))
                }
            }
        })
        .collect()
}

/// The canonical path of `path` when it may be served: inside `root` and
/// not a script. `None` (answered 404) otherwise, with a log line when
/// something exists but is refused.
fn servable(root: &Path, scripts: &NotFiles<'_>, raw_path: &str, path: &Path) -> Option<PathBuf> {
    let canonical = path.canonicalize().ok()?;
    if !canonical.starts_with(root) {
        log::warn!(target: LOG, "refused {}: not inside --root", crate::logging::quoted(raw_path));
        return None;
    }
    if let Some(why) = scripts.why(root, &canonical) {
        log::warn!(
            target: LOG, "refused {}: {} {why}, never a static file",
            crate::logging::quoted(raw_path),
            canonical.display()
        );
        return None;
    }
    Some(canonical)
}

/// Bytes escaped in a redirect's `Location`: controls, non-ASCII and what
/// cannot stand in a header value unescaped.
const LOCATION: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// `301` to the directory URL with its trailing slash (relative links in
/// its index page need it), the query kept. The path gets one leading
/// slash: `//sub/` would be a protocol-relative URL, i.e. the host `sub`.
fn directory_redirect(raw_path: &str, query: Option<&str>) -> Response {
    let mut location = format!("/{}/", raw_path.trim_start_matches('/'));
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let location = utf8_percent_encode(&location, LOCATION).to_string();
    // A short body, as nginx sends, rather than an empty octet-stream.
    let mut r =
        crate::http1::request::text_response(StatusCode::MovedPermanently, &format!("Moved Permanently: {location}"));
    r.insert_header("Location", location);
    r
}

/// Serves `raw_path` from `root` (canonical) for `req`'s method and
/// conditional/range headers; never a script (see [`NotFiles`]).
pub async fn serve<S>(root: &Path, scripts: &NotFiles<'_>, raw_path: &str, req: &Request<S>) -> Response {
    if req.method() != Method::Get && req.method() != Method::Head {
        let mut r = status(StatusCode::MethodNotAllowed);
        r.insert_header("Allow", "GET, HEAD");
        return r;
    }
    let file = match locate(root, scripts, raw_path, req) {
        Ok(file) => file,
        Err(refused) => return *refused,
    };
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
    let v = Validators::of(&file.meta);

    let mut res = Response::new(StatusCode::Ok);
    res.insert_header("ETag", v.etag.as_str());
    res.insert_header("Last-Modified", v.last_modified.as_str());
    res.insert_header("Accept-Ranges", "bytes");
    let mime = content_type(&file.path);

    if not_modified(header("If-None-Match"), header("If-Modified-Since"), &v.etag, v.modified) {
        res.set_status(StatusCode::NotModified);
        return res;
    }
    let range = match byte_range(header("Range"), header("If-Range"), &v, &mut res) {
        Ok(range) => range,
        Err(refused) => return *refused,
    };
    if let Err(refused) = set_body(&mut res, req.method(), &file, range).await {
        return *refused;
    }
    res.insert_header("Content-Type", mime);
    res
}

/// A request refused on the way: the response that says why (boxed, as a
/// `Response` is large).
type Refused = Box<Response>;

/// The file a request names, found and checked.
struct Located {
    /// Under `root` as asked for (its name gives the Content-Type).
    path: PathBuf,
    /// The same file, canonical: what is opened.
    canonical: PathBuf,
    meta: std::fs::Metadata,
}

/// Finds the regular file for `raw_path` (a directory's `index.html`): 404
/// for anything that may not be served, and a redirect for a directory
/// named without its trailing slash.
fn locate<S>(root: &Path, scripts: &NotFiles<'_>, raw_path: &str, req: &Request<S>) -> Result<Located, Refused> {
    let not_found = || Box::new(status(StatusCode::NotFound));
    let Some(rel) = safe_relative_path(raw_path) else { return Err(not_found()) };
    let mut path = root.join(rel);
    let Some(mut canonical) = servable(root, scripts, raw_path, &path) else { return Err(not_found()) };
    if canonical.is_dir() {
        if !raw_path.ends_with('/') {
            return Err(Box::new(directory_redirect(
                raw_path,
                crate::http1::request::raw_path_and_query(req).1.as_deref(),
            )));
        }
        path.push("index.html");
        match servable(root, scripts, raw_path, &path) {
            Some(c) => canonical = c,
            None => return Err(not_found()),
        }
    }
    match std::fs::metadata(&canonical) {
        Ok(meta) if meta.is_file() => Ok(Located { path, canonical, meta }),
        Ok(_) => {
            log::warn!(target: LOG, "refused {}: not a regular file", crate::logging::quoted(raw_path));
            Err(not_found())
        }
        Err(_) => Err(not_found()),
    }
}

/// What conditional requests compare against.
struct Validators {
    len: u64,
    modified: SystemTime,
    etag: String,
    last_modified: String,
}

impl Validators {
    fn of(meta: &std::fs::Metadata) -> Self {
        let len = meta.len();
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let stamp = modified.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let etag = format!("\"{len:x}-{stamp:x}\"");
        let last_modified = httpdate::fmt_http_date(modified);
        Validators { len, modified, etag, last_modified }
    }
}

/// The Content-Type for `path`'s extension; text types get UTF-8.
fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    match mime.type_() {
        mime_guess::mime::TEXT => format!("{mime}; charset=utf-8"),
        _ if mime.subtype() == "javascript" || mime.subtype() == "json" => format!("{mime}; charset=utf-8"),
        _ => mime.to_string(),
    }
}

/// The bytes to send: one byte range, when asked for (and If-Range, if any,
/// still matches), which makes `res` a 206; the whole file otherwise. A
/// range outside the file is a 416. A range in another unit than `bytes`
/// (`lines=1-2`) is ignored, as RFC 9110 §14.2 asks and nginx does.
fn byte_range(
    range: Option<String>,
    if_range: Option<String>,
    v: &Validators,
    res: &mut Response,
) -> Result<Range<u64>, Refused> {
    let len = v.len;
    let if_range_ok = if_range.is_none_or(|r| r == v.etag || r == v.last_modified);
    let (Some(spec), true) = (range, if_range_ok) else { return Ok(0..len) };
    let Some(spec) = byte_ranges(&spec) else { return Ok(0..len) };
    match http_range_header::parse_range_header(&spec).and_then(|r| r.validate(len)) {
        Ok(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            res.set_status(StatusCode::PartialContent);
            res.insert_header("Content-Range", format!("bytes {}-{}/{len}", r.start(), r.end()));
            Ok(*r.start()..*r.end() + 1)
        }
        // Several ranges: answer with the whole file, which HTTP allows.
        Ok(_) => Ok(0..len),
        Err(_) => {
            let mut r = status(StatusCode::RequestedRangeNotSatisfiable);
            r.insert_header("Content-Range", format!("bytes */{len}"));
            Err(Box::new(r))
        }
    }
}

/// A Range in the `bytes` unit, spelled `bytes=` for the parser (unit
/// names are case-insensitive); `None` for any other unit.
fn byte_ranges(spec: &str) -> Option<String> {
    let (unit, ranges) = spec.split_once('=')?;
    unit.eq_ignore_ascii_case("bytes").then(|| format!("bytes={ranges}"))
}

/// The body: `range` of the file, read as it is sent; for HEAD, only its
/// length.
async fn set_body(res: &mut Response, method: Method, file: &Located, range: Range<u64>) -> Result<(), Refused> {
    let count = range.end - range.start;
    if method == Method::Head {
        // The HTTP layer sends no body for HEAD but keeps this length.
        res.set_body(Body::from_reader(futures_lite::io::empty(), Some(count as usize)));
        return Ok(());
    }
    let mut f = match crate::runtime::File::open(&file.canonical).await {
        Ok(f) => f,
        Err(e) => {
            log::warn!(target: LOG, "{}: {e}", file.path.display());
            return Err(Box::new(status(StatusCode::NotFound)));
        }
    };
    if range.start > 0 && f.seek(std::io::SeekFrom::Start(range.start)).await.is_err() {
        return Err(Box::new(status(StatusCode::InternalServerError)));
    }
    res.set_body(Body::from_reader(futures_lite::io::BufReader::new(f.take(count)), Some(count as usize)));
    Ok(())
}

/// RFC 9110 §13.1: If-None-Match wins over If-Modified-Since; a date
/// later than now is invalid and ignored (§13.1.3), as nginx does.
fn not_modified(
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    etag: &str,
    modified: SystemTime,
) -> bool {
    if let Some(inm) = if_none_match {
        return inm.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == "*" || t == etag);
    }
    let valid = |since: &SystemTime| *since <= SystemTime::now();
    match if_modified_since.and_then(|d| httpdate::parse_http_date(&d).ok()).filter(valid) {
        // HTTP dates have whole seconds.
        Some(since) => modified.duration_since(since).map_or(true, |d| d.as_secs() == 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn conditional_requests() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(t);
        assert!(not_modified(Some("\"a\"".into()), None, "\"a\"", t));
        assert!(not_modified(Some("\"x\", W/\"a\"".into()), None, "\"a\"", t));
        assert!(!not_modified(Some("\"b\"".into()), Some(date.clone()), "\"a\"", t));
        assert!(not_modified(None, Some(date), "\"a\"", t + Duration::from_millis(300)));
        assert!(!not_modified(None, Some(httpdate::fmt_http_date(t - Duration::from_secs(5))), "\"a\"", t));
        assert!(!not_modified(None, None, "\"a\"", t));
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86_400));
        assert!(!not_modified(None, Some(future), "\"a\"", t));
    }

    #[test]
    fn the_files_a_commands_arguments_name() {
        let dir = std::env::temp_dir().canonicalize().expect("tmp").join(format!("named-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("dirs");
        std::fs::write(dir.join("c.py"), "print(1)\n").expect("c.py");
        let d = dir.display();
        let args = [
            format!("{d}/c.py"),
            "-u".into(),
            format!("--conf={d}/app.ini"),
            format!("{d}/sub"),
            format!("{d}/sub/../c.py"),
            "lobby".into(),
        ];
        let named = named_files(&args);
        assert!(named.contains(&dir.join("c.py")), "{named:?}");
        assert!(named.contains(&dir.join("app.ini")), "not there yet, protected by its directory: {named:?}");
        assert!(!named.contains(&dir.join("sub")), "a directory is not a script: {named:?}");
        let cwd = std::env::current_dir().expect("cwd").canonicalize().expect("cwd");
        assert!(named.contains(&cwd.join("lobby")), "a bare word is a file in the working directory: {named:?}");
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
