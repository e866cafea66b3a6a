//! The page served at `/` when no site is configured: lists the endpoints
//! and lets you talk to one from the browser. Compiled into the binary.

const PAGE: &str = include_str!("console.html");

/// The page with the endpoint list filled in.
pub fn page(endpoints: &[String]) -> String {
    let list = serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into());
    // `</` cannot end the script element from inside a JSON string.
    PAGE.replace("/*ENDPOINTS*/[]", &list.replace("</", "<\\/"))
}
