//! Integration tests: every route of the emulator over real HTTP(S).

mod admin;
mod auth;
mod registry;
mod support;
mod workspace;
