//! Property-based fuzzing of the HTTP front end: the head parser on
//! arbitrary bytes, well-formed requests kept exactly as sent, and chunked
//! bodies decoded back to what was encoded, however they are split into
//! chunks and TCP writes. PROPTEST_CASES sets the number of cases.

use std::sync::{Arc, Mutex};

use async_std::net::{TcpListener, TcpStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use ws2http::http1::head::{self, Framing};
use ws2http::http1::input::{lock, BodyReader, Input};

fn cases(default: u32) -> ProptestConfig {
    ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// Sends `writes` over a real loopback socket and reads one head and its
/// body back through the server's reader.
fn through_socket(writes: Vec<Vec<u8>>) -> Result<(head::Head, Vec<u8>), String> {
    async_std::task::block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let writer = async_std::task::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            for w in writes {
                c.write_all(&w).await.expect("write");
                c.flush().await.expect("flush");
            }
            c
        });
        let (server, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let input = Arc::new(Mutex::new(Input::new(
            ws2http::tls::Stream::Plain(server),
            16 * 1024,
            std::time::Duration::from_secs(5),
        )));
        let head = std::future::poll_fn(|cx| lock(&input).poll_head(cx)).await.map_err(|e| format!("{e:?}"))?;
        let generation = lock(&input).begin_body(&head);
        let mut body = Vec::new();
        BodyReader::new(input.clone(), generation).read_to_end(&mut body).await.map_err(|e| e.to_string())?;
        drop(writer.await);
        Ok((head, body))
    })
}

/// Splits `bytes` at the given cut points (as fractions of its length).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        if p > last {
            out.push(bytes[last..p].to_vec());
            last = p;
        }
    }
    out
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn the_head_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Some(end) = head::find_end(&bytes, 0) {
            if let Ok(h) = head::parse(&bytes[..end]) {
                prop_assert!(h.headers.iter().all(|(_, v)| v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))));
            }
        }
    }

    #[test]
    fn well_formed_heads_are_kept_as_sent(
        method in "GET|POST|PUT|DELETE",
        path in "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,12}){1,4}(\\?[A-Za-z0-9=&%./-]{0,20})?",
        names in proptest::collection::vec("X-[A-Za-z0-9-]{1,12}", 0..8),
        values in proptest::collection::vec("[ -~]{0,30}", 8),
        len in proptest::option::of(0u64..100_000),
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: example.org:8080\r\n");
        for (n, v) in names.iter().zip(&values) {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(l) = len {
            req.push_str(&format!("Content-Length: {l}\r\n"));
        }
        req.push_str("\r\n");
        let h = head::parse(req.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&h.method, &method);
        prop_assert_eq!(&h.target, &path);
        prop_assert_eq!(h.host.as_deref(), Some("example.org:8080"));
        prop_assert_eq!(h.framing, match len { Some(0) | None => Framing::None, Some(l) => Framing::Length(l) });
        for (n, v) in names.iter().zip(&values) {
            prop_assert!(h.headers.iter().any(|(hn, hv)| hn == n && hv == v.trim()));
        }
    }
}

proptest! {
    #![proptest_config(cases(100))]

    #[test]
    fn chunked_bodies_decode_to_what_was_sent(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        chunk_cuts in proptest::collection::vec(any::<usize>(), 0..6),
        write_cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut wire = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in split(&body, &chunk_cuts) {
            wire.extend(format!("{:x};ext=1\r\n", chunk.len()).bytes());
            wire.extend(chunk);
            wire.extend(b"\r\n");
        }
        wire.extend(b"0\r\nTrailer: x\r\n\r\n");
        let (h, got) = through_socket(split(&wire, &write_cuts)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(h.framing, Framing::Chunked);
        prop_assert_eq!(got, body);
    }

    #[test]
    fn length_bodies_stop_at_their_length(
        body in proptest::collection::vec(any::<u8>(), 1..3000),
        extra in proptest::collection::vec(any::<u8>(), 0..100),
        write_cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut wire = format!("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        wire.extend(&body);
        wire.extend(&extra);
        let (_, got) = through_socket(split(&wire, &write_cuts)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got, body);
    }
}
