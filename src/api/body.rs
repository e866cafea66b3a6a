//! Request bodies, read only up to a cap (`--api-max-body`, and
//! `--max-message` for a pushed message): a bigger one is refused with 413,
//! from its Content-Length before reading anything, or as soon as a chunked
//! body passes the cap.

use tide::{Request, StatusCode};

use super::error;
use super::State;
use crate::action::Message;
use crate::http1::head::RawHead;

/// The request body as a message: binary for application/octet-stream,
/// otherwise text (which must be UTF-8). At most `--max-message` bytes (and
/// `--api-max-body`).
pub(super) async fn body_message(req: &mut Request<State>) -> Result<Message, tide::Result> {
    // The HTTP layer labels a body without Content-Type as octet-stream;
    // here no type means text, so look at what the client really sent.
    let sent = match req.ext::<RawHead>() {
        Some(raw) => raw.content_type.clone(),
        None => req.header("Content-Type").map(|v| v.last().as_str().to_owned()),
    };
    let binary =
        sent.is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/octet-stream"));
    let app = req.state().clone();
    let cap = match app.max_message < app.max_body {
        true => BodyCap { bytes: app.max_message, flag: "--max-message" },
        false => BodyCap { bytes: app.max_body, flag: "--api-max-body" },
    };
    let body = read_body(req, cap).await?;
    if binary {
        Ok(Message::Binary(body.into()))
    } else {
        Message::text_from_bytes(body).ok_or_else(|| {
            error(
                StatusCode::BadRequest,
                "the body is not valid UTF-8; send binary data with Content-Type: application/octet-stream",
            )
        })
    }
}
/// The most a route reads of a request body, and the flag that sets it.
#[derive(Clone, Copy)]
pub(super) struct BodyCap {
    pub(super) bytes: usize,
    pub(super) flag: &'static str,
}

/// The request body, at most `cap.bytes` of it: a declared Content-Length
/// over the cap is refused before anything is read; a body without one
/// (chunked) is read up to one byte past the cap, then refused. Only what
/// the cap allows is ever held in memory.
pub(super) async fn read_body(req: &mut Request<State>, cap: BodyCap) -> Result<Vec<u8>, tide::Result> {
    use crate::http1::body::{read_whole, ReadError};
    let declared = req.len();
    let timeout = req.state().http_timeout;
    let mut body = req.take_body();
    match read_whole(&mut body, declared, cap.bytes, timeout, |_| true).await {
        Ok(buf) => Ok(buf),
        Err(ReadError::TooLarge) => {
            let what = declared.map_or("chunked body".to_owned(), |n| format!("Content-Length {n}"));
            Err(too_large(req, &what, cap))
        }
        Err(e) => {
            let (code, why) = e.answer(cap.bytes, cap.flag);
            Err(error(StatusCode::try_from(code).unwrap_or(StatusCode::BadRequest), why))
        }
    }
}

/// 413 for a body over its cap, with one log line. The connection is closed
/// (every API response says `Connection: close`); what the client still sends
/// is not kept.
fn too_large(req: &Request<State>, what: &str, cap: BodyCap) -> tide::Result {
    let (bytes, flag) = (cap.bytes, cap.flag);
    log::warn!("api: {} {} refused (413): {what} over the {bytes}-byte cap ({flag})", req.method(), req.url().path());
    let mut r = error(
        StatusCode::PayloadTooLarge,
        format!("the body is larger than {bytes} bytes ({flag}); send less, or start ws2http with a larger {flag}"),
    )?;
    r.insert_header("Connection", "close");
    Ok(r)
}
