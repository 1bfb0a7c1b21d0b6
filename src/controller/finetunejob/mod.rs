//! FineTuneJob controller: notebook steps 1–5 as one pipeline job.

pub mod params;
pub mod pyliteral;
