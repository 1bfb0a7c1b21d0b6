//! Request checks shared by the ARM routes: api-version, resource naming rules, ISO 8601 durations.

use std::sync::LazyLock;

use regex::Regex;

use crate::http::{ApiError, Req};

static API_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}(-(preview|privatepreview|dataplanepreview|alpha|beta))?$")
        .expect("static regex")
});
static ENDPOINT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$").expect("static regex"));
static DEPLOYMENT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z][a-zA-Z0-9-]{0,30}[a-zA-Z0-9]$").expect("static regex"));
static ASSET_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9][a-zA-Z0-9\-_.]{0,254}$").expect("static regex"));
static JOB_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$").expect("static regex"));
static COMPUTE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$").expect("static regex"));
static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$").expect("static regex")
});

/// Requires an `api-version` that looks like a real one (any date, with an optional known suffix).
pub(crate) fn api_version(req: &Req) -> Result<(), ApiError> {
    match req.api_version() {
        None | Some("") => Err(ApiError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if API_VERSION.is_match(v) => Ok(()),
        Some(v) => Err(ApiError::bad_request(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '2026-05-01,2026-03-01,2025-12-01,\
                 2025-09-01,2024-10-01,2024-04-01,2024-01-01-preview,2023-08-01-preview,2023-04-01-preview,\
                 2022-02-01-preview,2021-10-01-dataplanepreview'."
            ),
        )),
    }
}

fn name_error(kind: &str, name: &str, rule: &str) -> ApiError {
    ApiError::validation("name", "InvalidName", format!("The {kind} name '{name}' is invalid: {rule}"))
}

/// Online endpoint names: 3–32 characters, a letter first, letters, digits and `-`, not ending in `-`.
pub(crate) fn endpoint_name(name: &str) -> Result<(), ApiError> {
    if ENDPOINT_NAME.is_match(name) {
        Ok(())
    } else {
        Err(name_error(
            "online endpoint",
            name,
            "it must be 3 to 32 characters long, begin with a letter, contain only letters, digits and '-', \
             and end with a letter or digit.",
        ))
    }
}

/// Deployment names: 2–32 characters, a letter first, letters, digits and `-`, not ending in `-`.
pub(crate) fn deployment_name(name: &str) -> Result<(), ApiError> {
    if DEPLOYMENT_NAME.is_match(name) {
        Ok(())
    } else {
        Err(name_error(
            "online deployment",
            name,
            "it must be 2 to 32 characters long, begin with a letter, contain only letters, digits and '-', \
             and end with a letter or digit.",
        ))
    }
}

/// Asset (model) names and versions: letters, digits, `-`, `_`, `.`, alphanumeric first, ≤ 255.
pub(crate) fn asset_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if ASSET_NAME.is_match(name) {
        Ok(())
    } else {
        Err(name_error(
            kind,
            name,
            "it must start with a letter or digit and contain only letters, digits, '-', '_' and '.' \
             (at most 255 characters).",
        ))
    }
}

/// Job names: letters, digits, `-`, `_`, alphanumeric first, ≤ 255.
pub(crate) fn job_name(name: &str) -> Result<(), ApiError> {
    if JOB_NAME.is_match(name) {
        Ok(())
    } else {
        Err(name_error(
            "job",
            name,
            "it must start with a letter or digit and contain only letters, digits, '-' and '_' (at most 255 \
             characters).",
        ))
    }
}

/// Compute names: 3–24 characters, a letter first, letters, digits and `-`.
pub(crate) fn compute_name(name: &str) -> Result<(), ApiError> {
    if COMPUTE_NAME.is_match(name) {
        Ok(())
    } else {
        Err(name_error(
            "compute",
            name,
            "it must be 3 to 24 characters long, begin with a letter, contain only letters, digits and '-', \
             and end with a letter or digit.",
        ))
    }
}

/// Parses an ISO 8601 duration of days, hours, minutes and seconds (`PT90S`, `PT10M`, `P1DT2H`) into seconds.
pub(crate) fn iso_duration_secs(text: &str) -> Option<f64> {
    let caps = DURATION.captures(text)?;
    if text == "P" || text.ends_with('T') {
        return None;
    }
    let part = |i: usize| caps.get(i).map_or(Ok(0.0), |m| m.as_str().parse::<f64>()).ok();
    Some(part(1)? * 86400.0 + part(2)? * 3600.0 + part(3)? * 60.0 + part(4)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations the SDK and users write parse to seconds; malformed ones are refused.
    #[test]
    fn parses_iso_durations() {
        assert_eq!(iso_duration_secs("PT90S"), Some(90.0));
        assert_eq!(iso_duration_secs("PT10M"), Some(600.0));
        assert_eq!(iso_duration_secs("P1DT1H1M1.5S"), Some(90061.5));
        assert_eq!(iso_duration_secs("PT"), None);
        assert_eq!(iso_duration_secs("90"), None);
        assert_eq!(iso_duration_secs("P"), None);
    }

    /// Names follow Azure's rules, including length limits and the first character.
    #[test]
    fn naming_rules() {
        assert!(endpoint_name("ultrachat-completion-1700000000").is_ok());
        assert!(endpoint_name("1abc").is_err());
        assert!(endpoint_name("ab").is_err());
        assert!(endpoint_name("abc-").is_err());
        assert!(endpoint_name(&"a".repeat(33)).is_err());
        assert!(deployment_name("demo").is_ok());
        assert!(deployment_name("de_mo").is_err());
        assert!(job_name("ftj-default-abc_1").is_ok());
        assert!(job_name("-x").is_err());
        assert!(asset_name("model", "Phi-3-mini-4k-instruct-ultrachat-200k").is_ok());
        assert!(asset_name("model", "bad/name").is_err());
        assert!(compute_name("gpu-cluster").is_ok());
        assert!(compute_name("g").is_err());
    }
}
