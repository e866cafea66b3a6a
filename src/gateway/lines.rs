//! The one capped line reader: every byte stream a backend answers with
//! (a pipe, a FastCGI stream, an HTTP body, a script's stderr) is read line
//! by line through it, so that no line, however long, is held past its cap.

use futures_lite::io::AsyncBufRead;

/// Reads one line (through `\n`) into `buf`, but never more than `cap`
/// bytes: a script that prints gigabytes without a newline costs no memory.
/// Returns the bytes read (0 at the end of the stream) and `true` when it
/// stopped at `cap` before the end of the line (the rest is still unread).
pub async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    use futures_lite::io::AsyncBufReadExt;
    let mut consumed = 0;
    loop {
        let room = cap.saturating_sub(buf.len());
        if room == 0 {
            return Ok((consumed, true));
        }
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok((consumed, false));
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (available.len().min(room), false),
        };
        buf.extend_from_slice(&available[..take]);
        r.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, false));
        }
    }
}

/// Reads and drops the rest of a line (through `\n`, or to the end).
pub async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<()> {
    use futures_lite::io::AsyncBufReadExt;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = available.len();
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::BufReader;

    fn read(input: &[u8], cap: usize) -> Vec<(Vec<u8>, bool)> {
        futures_lite::future::block_on(async {
            let mut r = BufReader::with_capacity(4, input);
            let mut out = Vec::new();
            loop {
                let mut line = Vec::new();
                let (n, cut) = read_line_capped(&mut r, &mut line, cap).await.expect("read");
                if n == 0 {
                    return out;
                }
                out.push((line, cut));
            }
        })
    }

    #[test]
    fn lines_are_capped_without_reading_past_the_cap() {
        assert_eq!(read(b"ab\ncd", 10), [(b"ab\n".to_vec(), false), (b"cd".to_vec(), false)]);
        // A long line comes in cap-sized pieces: the caller can stop at the first.
        assert_eq!(
            read(b"abcdefg\nh", 3),
            [(b"abc".to_vec(), true), (b"def".to_vec(), true), (b"g\n".to_vec(), false), (b"h".to_vec(), false)]
        );
        assert_eq!(read(b"abc\n", 3), [(b"abc".to_vec(), true), (b"\n".to_vec(), false)]);
        assert_eq!(read(b"", 3), []);
    }

    #[test]
    fn the_rest_of_a_long_line_is_skipped_not_kept() {
        futures_lite::future::block_on(async {
            let mut r = BufReader::with_capacity(2, &b"0123456789\nnext\n"[..]);
            let mut line = Vec::new();
            assert_eq!(read_line_capped(&mut r, &mut line, 4).await.expect("read"), (4, true));
            skip_line(&mut r).await.expect("skip");
            line.clear();
            read_line_capped(&mut r, &mut line, 100).await.expect("read");
            assert_eq!(line, b"next\n");
        });
    }
}
