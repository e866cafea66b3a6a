//! A test PKI made with `openssl` (Debian's; the "backends" suite in
//! tests/suites.txt), for the tests that run real TLS clients and servers.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test CA (`ca.pem`) and a certificate it signed for `localhost` and
/// `127.0.0.1` (`cert.pem`, `key.pem`), in `dir`.
pub fn make_pki(dir: &Path, name: &str) -> PathBuf {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("pki dir");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let subject = format!("/CN=ws2http test CA {name}");
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subject],
            &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    dir
}
