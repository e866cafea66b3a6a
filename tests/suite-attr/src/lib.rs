//! `#[suite("redis")]` above a `#[test]`: when `WS2HTTP_TEST_SKIP` names
//! that suite, the test is compiled with `#[ignore = "WS2HTTP_TEST_SKIP=redis"]`,
//! so the summary says `ignored` with the reason instead of `ok`.
//!
//! Why a macro: the standard test harness decides `ignored` at compile time
//! only. The expansion reads the variable with `option_env!`, which makes
//! cargo rebuild the test crate (and only it) when the variable changes.
//! Suite names are checked against tests/suites.txt, at compile time.

use proc_macro::{TokenStream, TokenTree};

const SKIP_VAR: &str = "WS2HTTP_TEST_SKIP";
const MANIFEST: &str = include_str!("../../suites.txt");

fn known_suites() -> Vec<&'static str> {
    let mut names = Vec::new();
    for line in MANIFEST.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.split_whitespace().next().filter(|n| !names.contains(n)) {
            names.push(name);
        }
    }
    names
}

fn error(message: &str) -> TokenStream {
    format!("compile_error!({message:?});").parse().expect("a compile_error! invocation")
}

/// The suite names in the attribute: string literals, comma-separated.
fn suite_names(attr: TokenStream) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for tree in attr {
        match tree {
            TokenTree::Literal(l) => {
                let s = l.to_string();
                let name = s.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
                names.push(name.ok_or(format!("#[suite]: expected a string, got {s}"))?.to_owned());
            }
            TokenTree::Punct(p) if p.as_char() == ',' => {}
            other => return Err(format!("#[suite]: expected suite names as strings, got {other}")),
        }
    }
    Ok(names)
}

/// Marks a test as part of the named suites (tests/suites.txt): ignored,
/// with the reason, when `WS2HTTP_TEST_SKIP` names one of them. Put it
/// above `#[test]`; call `require_suite` (tests/common) first in the body.
#[proc_macro_attribute]
pub fn suite(attr: TokenStream, item: TokenStream) -> TokenStream {
    let names = match suite_names(attr) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) => return error("#[suite]: name at least one suite, e.g. #[suite(\"redis\")]"),
        Err(e) => return error(&e),
    };
    let known = known_suites();
    let value = std::env::var(SKIP_VAR).unwrap_or_default();
    let skipped: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for name in names.iter().map(String::as_str).chain(skipped.iter().copied()) {
        if !known.contains(&name) {
            return error(&format!(
                "unknown test suite {name:?} (in #[suite] or {SKIP_VAR}); the suites are {}",
                known.join(",")
            ));
        }
    }
    let mut out: TokenStream =
        format!("const _: Option<&str> = option_env!({SKIP_VAR:?});").parse().expect("a const item");
    if let Some(hit) = names.iter().find(|n| skipped.contains(&n.as_str())) {
        out.extend(format!("#[ignore = \"{SKIP_VAR}={hit}\"]").parse::<TokenStream>().expect("an attribute"));
    }
    out.extend(item);
    out
}
