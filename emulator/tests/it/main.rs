//! Integration tests: every route of the emulator over real HTTP(S).

mod admin;
mod auth;
mod endpoints;
mod jobs;
mod models;
mod registry;
mod support;
mod workspace;
