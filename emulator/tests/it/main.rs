//! Integration tests: every route of the emulator over real HTTP(S).

mod admin;
mod auth;
mod jobs;
mod registry;
mod support;
mod workspace;
