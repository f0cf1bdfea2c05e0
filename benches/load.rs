//! The load benchmark: see benches/README.md once it lands.

fn main() {}
