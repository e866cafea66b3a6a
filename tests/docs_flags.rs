//! Every flag `ws2http --help` lists is documented: in README.md's option
//! list, and in docs/PROTOCOL.md or docs/OPERATIONS.md, so a new flag (or a
//! renamed one) cannot go unexplained.

mod common;

#[test]
fn every_flag_is_documented() {
    let out = common::ws2http().arg("--help").output().expect("run ws2http --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("read doc");
    let readme = read("README.md");
    let docs = read("docs/PROTOCOL.md") + &read("docs/OPERATIONS.md") + &read("docs/DEPLOYMENT.md");
    let mut flags: Vec<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|w| !["--help", "--version"].contains(w))
        .collect();
    flags.sort_unstable();
    flags.dedup();
    assert!(flags.len() > 20, "too few flags found in --help: {flags:?}");
    for flag in flags {
        let listed = |text: &str| text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}`"));
        assert!(listed(&readme), "{flag} is missing from README.md's options");
        assert!(listed(&docs), "{flag} is missing from docs/PROTOCOL.md, OPERATIONS.md and DEPLOYMENT.md");
    }
}
