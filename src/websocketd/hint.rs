//! A websocketd flag given to `ws2http` (`ws2http --port=8080 ./count.sh`,
//! the first thing a websocketd user tries): instead of clap's "unexpected
//! argument", one line naming the ws2http equivalent and the `websocketd`
//! name under which the binary reads websocketd's command line as it is.

/// websocketd's flag → what `ws2http` offers instead.
const EQUIVALENTS: &[(&str, &str)] = &[
    ("port", "--listen [ADDR:]PORT"),
    ("address", "--listen ADDR:PORT"),
    ("dir", "--cgi-bin DIR with --per-connection '*'"),
    ("staticdir", "--root DIR"),
    ("cgidir", "--cgi-bin DIR (its scripts also answer plain HTTP requests as CGI)"),
    ("devconsole", "--console"),
    ("passenv", "--pass-env NAME"),
    ("binary", "--per-connection-binary"),
    ("maxforks", "--max-connection-procs N"),
    ("closems", "--close-grace SECS"),
    ("origin", "--allow-origin ORIGIN"),
    ("sameorigin", "the default (same-origin handshakes are always accepted)"),
    ("header", "none yet"),
    ("header-ws", "none yet"),
    ("header-http", "none yet"),
    ("loglevel", "-v, -vv or RUST_LOG"),
    ("ssl", "--tls-cert FILE --tls-key FILE"),
    ("sslcert", "--tls-cert FILE"),
    ("sslkey", "--tls-key FILE"),
    ("redirport", "none"),
    ("reverselookup", "none"),
    ("license", "none"),
];

/// The hint for the first websocketd-only flag among `args` (the whole
/// command line, program name first), if any. Only flags before `--` or a
/// subcommand name count; `-flag` and `--flag[=value]` both match.
pub fn for_args(args: &[String]) -> Option<String> {
    args.iter().skip(1).take_while(|a| *a != "--").find_map(|a| {
        let flag = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
        let name = flag.split_once('=').map_or(flag, |(n, _)| n);
        let (name, ours) = EQUIVALENTS.iter().find(|(n, _)| *n == name)?;
        Some(format!(
            "--{name} is a websocketd flag; in ws2http: {ours}. To use websocketd's command line as it is, run \
             this binary as `websocketd` (ln -s \"$(which ws2http)\" ~/.local/bin/websocketd)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(args: &[&str]) -> Option<String> {
        for_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_websocketd_only_flag_points_the_way() {
        for (name, _) in super::super::args::FLAGS.iter().filter(|(n, _)| *n != "version") {
            let h = hint(&["ws2http", &format!("--{name}=1"), "x"]).unwrap_or_else(|| panic!("{name}"));
            assert!(h.starts_with(&format!("--{name} is a websocketd flag; in ws2http: ")), "{h}");
            assert!(h.contains("`websocketd`") && !h.contains('\n'), "{h}");
            assert!(hint(&["ws2http", &format!("-{name}"), "1"]).is_some(), "-{name}");
        }
        let h = hint(&["ws2http", "--port=8080", "./count.sh"]).expect("hint");
        assert!(h.contains("in ws2http: --listen [ADDR:]PORT"), "{h}");
        assert_eq!(hint(&["ws2http", "--listen", "8080", "--", "--port"]), None);
        assert_eq!(hint(&["ws2http", "--nonsense"]), None);
    }
}
