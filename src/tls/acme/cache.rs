//! Where ACME keeps the account key and the certificate between runs
//! (`--acme-cache DIR`), in a layout an operator can read:
//!
//! ```text
//! DIR/                                         0700
//!   acme-v02.api.letsencrypt.org_directory/    0700, one per --acme-directory
//!     account-admin@example.com.der            0600, the account's key (PKCS#8)
//!     cert-example.com,www.example.com.pem     0600, private key then chain
//! ```
//!
//! Why not rustls-acme's `DirCache`: it names files by a hash, writes them
//! with the process's umask (a private key at 0644) and in place (a crash
//! mid-write leaves a truncated certificate). Here each file is written
//! to a temporary name at 0600 and renamed over the old one.
//!
//! The cache also hands the driver the certificate it last loaded or
//! stored ([`Seen`]): rustls-acme's resolver does not say which certificate
//! it serves, and the driver needs its dates for the log and `/metrics`.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rustls_acme::{AccountCache, CertCache};

/// The PEM last read from or written to the cache.
pub(crate) type Seen = Arc<Mutex<Option<Vec<u8>>>>;

pub(crate) struct FileCache {
    dir: PathBuf,
    pub(crate) seen: Seen,
}

impl FileCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        FileCache { dir, seen: Seen::default() }
    }

    /// The file for `what` (`cert-…pem`, `account-…der`) under the
    /// directory URL's own subdirectory.
    pub(crate) fn path(&self, directory_url: &str, what: &str) -> PathBuf {
        let url = directory_url.split_once("://").map_or(directory_url, |(_, rest)| rest);
        self.dir.join(file_safe(url.trim_end_matches('/'))).join(file_safe(what))
    }

    /// `cert-{domains joined by ','}.pem`, or, when that would pass
    /// [`LONGEST_NAME`] bytes (NAME_MAX is 255: storing a certificate
    /// just issued would fail, and every restart would order again),
    /// `cert-{first (its first 150 bytes)}+{others}-{hash of all}.pem`.
    pub(crate) fn cert_name(domains: &[String]) -> String {
        let all = domains.join(",");
        let name = format!("cert-{all}.pem");
        match (name.len() > LONGEST_NAME, domains.first()) {
            // Domains are ASCII (checked at start-up): any byte is a char boundary.
            (true, Some(first)) => {
                let first = first.get(..150).unwrap_or(first);
                format!("cert-{first}+{}-{:016x}.pem", domains.len() - 1, fnv1a(all.as_bytes()))
            }
            _ => name,
        }
    }

    fn account_name(contact: &[String]) -> String {
        let who: Vec<&str> = contact.iter().map(|c| c.strip_prefix("mailto:").unwrap_or(c)).collect();
        match who.is_empty() {
            true => "account.der".to_owned(),
            false => format!("account-{}.der", who.join(",")),
        }
    }

    fn remember(&self, pem: &[u8]) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(pem.to_vec());
        }
    }
}

/// The longest certificate file name written as is (a hashed name is at
/// most 5 + 150 + 1 + 3 + 1 + 16 + 4 bytes).
pub(crate) const LONGEST_NAME: usize = 200;

/// FNV-1a, 64 bits: stable across builds and versions, unlike std's
/// hasher, so a restart finds the file again.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Letters, digits and `.,@-_` kept; anything else (`/`, `:`) becomes `_`,
/// and so does a leading `.` (no `..`, no hidden file).
fn file_safe(s: &str) -> String {
    let keep = |(i, c): (usize, char)| match c.is_ascii_alphanumeric() || (i > 0 && ".,@-_".contains(c)) {
        true => c,
        false => '_',
    };
    s.chars().enumerate().map(keep).collect()
}

/// `None` when the file does not exist yet.
fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to a temporary file at 0600 beside `path`, then renames
/// it over `path`: a reader sees the old file or the new one, never half.
/// (Small files, written once per renewal: done in place on the task.)
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The error with the file it concerns, for the log line.
fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[async_trait]
impl CertCache for FileCache {
    type EC = std::io::Error;

    async fn load_cert(&self, domains: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EC> {
        let path = self.path(directory_url, &Self::cert_name(domains));
        let pem = read(&path).map_err(|e| with_path(e, &path))?;
        match &pem {
            Some(pem) => self.remember(pem),
            None => log::info!(
                "acme: no certificate for {} in the cache ({}): ordering one from {directory_url}",
                domains.join(","),
                path.display()
            ),
        }
        Ok(pem)
    }

    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> Result<(), Self::EC> {
        self.remember(cert);
        let path = self.path(directory_url, &Self::cert_name(domains));
        write(&path, cert).map_err(|e| with_path(e, &path))?;
        log::info!("acme: certificate for {} stored in {}", domains.join(","), path.display());
        Ok(())
    }
}

#[async_trait]
impl AccountCache for FileCache {
    type EA = std::io::Error;

    async fn load_account(&self, contact: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EA> {
        let path = self.path(directory_url, &Self::account_name(contact));
        read(&path).map_err(|e| with_path(e, &path))
    }

    async fn store_account(&self, contact: &[String], directory_url: &str, key: &[u8]) -> Result<(), Self::EA> {
        let path = self.path(directory_url, &Self::account_name(contact));
        write(&path, key).map_err(|e| with_path(e, &path))?;
        log::info!("acme: new account key stored in {}", path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ws2http-acme-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn files_are_named_after_directory_and_domains_and_private() {
        let dir = temp_dir("layout");
        let cache = FileCache::new(dir.clone());
        let domains = vec!["example.com".to_owned(), "www.example.com".to_owned()];
        let url = "https://127.0.0.1:14000/dir";
        let contact = vec!["mailto:a@example.com".to_owned()];
        futures_lite::future::block_on(async {
            assert!(cache.load_cert(&domains, url).await.unwrap().is_none());
            cache.store_cert(&domains, url, b"PEM").await.unwrap();
            cache.store_account(&contact, url, b"KEY").await.unwrap();
            assert_eq!(cache.load_cert(&domains, url).await.unwrap().as_deref(), Some(&b"PEM"[..]));
            assert_eq!(cache.load_account(&contact, url).await.unwrap().as_deref(), Some(&b"KEY"[..]));
        });
        let sub = dir.join("127.0.0.1_14000_dir");
        let cert = sub.join("cert-example.com,www.example.com.pem");
        let account = sub.join("account-a@example.com.der");
        for (path, mode) in [(&sub, 0o700), (&cert, 0o600), (&account, 0o600)] {
            let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{}", path.display());
        }
        assert_eq!(cache.seen.lock().unwrap().as_deref(), Some(&b"PEM"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_domain_list_gets_a_short_stable_file_name() {
        let domains: Vec<String> =
            (0..12).map(|i| format!("name-number-{i}.a-rather-long-example-domain.com")).collect();
        let name = FileCache::cert_name(&domains);
        assert!(name.len() <= 255, "{name}");
        assert!(name.starts_with("cert-name-number-0.a-rather-long-example-domain.com+11-"), "{name}");
        assert_eq!(name, FileCache::cert_name(&domains));
        let mut other = domains.clone();
        other[11].push('x');
        assert_ne!(name, FileCache::cert_name(&other));
        let longest = vec!["a".repeat(63) + "." + &"b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(61); 2];
        assert!(FileCache::cert_name(&longest).len() <= 255);
        assert!(FileCache::cert_name(&longest[..1]).len() <= 255);
        assert_eq!(FileCache::cert_name(&["example.com".to_owned()]), "cert-example.com.pem");
    }

    #[test]
    fn names_cannot_leave_the_directory() {
        let cache = FileCache::new(PathBuf::from("/c"));
        let path = cache.path("https://evil/../../x", "account-../../a.der");
        assert_eq!(path, PathBuf::from("/c/evil_.._.._x/account-.._.._a.der"));
        assert_eq!(cache.path("https://..", ".."), PathBuf::from("/c/_./_."));
    }
}
