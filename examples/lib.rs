//! Runnable examples of Cairn (`cargo run --example <name>`). This library target is empty;
//! the examples are the `[[example]]` entries of this package.
