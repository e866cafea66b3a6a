//! Plain HTTP requests on the public listener.

pub mod cgi;
